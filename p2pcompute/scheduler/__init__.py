"""Job specs, planning, placement, dispatch with leases, retries and verification.

Files:
    model.py   what the parts pass between them: JobPlan, TaskSpec, InputRef, Condition, Requirements, RetryPolicy

The rest is being built (issue 10): spec.py (job.yaml v1 and its JSON Schema),
plan.py (map, split, stages into a JobPlan), and the pure state machines
(job state, placement, leases, replication) with their trio driver.
"""
