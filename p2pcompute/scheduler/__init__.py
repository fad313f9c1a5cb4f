"""Job specs, planning, placement, dispatch with leases, retries and verification.

Files:
    model.py   what the parts pass between them: JobPlan, TaskSpec, InputRef, Condition, Requirements, RetryPolicy
    job_schema.json  the JSON Schema of job.yaml v1 (docs/job-spec.md), shipped in the package
    spec_check.py  runs that schema: every problem as a Problem with its path and line
    spec.py    job.yaml v1 -> JobSpec: stages, map, split, when, resources, constraints; every problem with its path
    spec_inputs.py  one input: local files, globs, URIs, registry handles, lists; collections and shape hints
    spec_link.py   the checks across stages: references, cycles, per-item counts, scalar conditions, shapes
    plan.py    JobSpec + resolved input CIDs -> JobPlan: map batches, matmul tiles + combine, stages (pure)
    events.py      the state machines' events and commands (Dispatch, SendOffer, GrantLease, ...) and JobConfig
    job_state.py   JobState: one job run by its coordinator (DAG, offers, leases, retries, results), pure
    task_run.py    TaskRun: one task's run-time state, attempts and story, and its record form
    job_record.py  the job record: full record, deltas for replicas (apply_delta), from_record for a takeover
    placement.py   Placement: Sparrow batch sampling with data locality; oracle and random modes; unmet()
    providers.py   the DHT's providers of tasks' inputs for placement: bounded lookups, a bounded cache with expiry
    leases.py      ExecutorLeases: an executing peer's reservations, slots and heartbeats, pure
    messages.py    the scheduler's wire messages (codes 400-411, 415-419): offers, grants, results, job records, lines
    replicas.py    the k peers closest to a job id by XOR: who holds its record, who takes it over
    lines.py       a job's lines of coordinators (epoch, nonce) and TakeoverAsk: a replica asks the record's other
                   holders for a newer line before it takes a job over (pure; the simulation and the service)
    runner.py      an executing peer runs one granted task: inputs by CID, the executor, outputs pinned
    task_logs.py   a task's stderr: pinned as a CID by the peer that ran it, read back for ``logs JOB [TASK]``
    carry.py       small inputs and outputs carried inline in grants and results, checked against their CIDs
    service.py     SchedulerService, the trio driver: coordinator role, placement, timers, membership
    executing.py   its executor role: offers, grants, runs, heartbeats, results (a mixin)
    replication.py its replication of job records to the k closest peers, the line question, takeover (a mixin)
    jobs_api.py    its control-API routes: /v1/jobs submit, list, describe, logs, cancel (a mixin)
    job_lookup.py  following a job through any peer: JobQuery to its coordinator or replicas; JobCancel, JobList (a mixin)
    submitted.py   the jobs submitted through this peer, kept (and saved) so that `jobs` lists them after a takeover
    submit.py      POST /v1/jobs: job.yaml + base dir -> local inputs added and pinned -> JobPlan
    blocks.py      submit's half of a split matmul: a local or ipfs:// input cut into row/column blocks, a CID each
    submit_sources.py  submit's URLs (fetched here, bounded) and registry handles (resolved) -> CIDs, pinned
    verifying.py   its verification role (a mixin): ledger, evidence check, tensors, accusations (423)
    verification/  result verification strategies, signed results and evidence, reputation, bans (pure)

The job simulation drives these machines with simulations/sched_peer.py (``simulate jobs``).
"""
