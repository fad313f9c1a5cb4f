"""Result verification, signed results and evidence, reputation and bans, Sybil limits (issue 11). Pure.

Files:
    engine.py      TaskVerification: one task's results in, commands out (Execute, Load, Accept, Reject, GiveUp)
    strategies.py  none, replicate(n, agree=k, anchor), adaptive, spot-check(rate), check, tolerance(rtol, atol);
                   anchored votes (agreement counts only with a trusted execution or a vetted peer)
    compare.py     when two results agree: Exact (CIDs) or Close (tensors within rtol/atol)
    checks.py      cheap checks operators declare (register_check); Freivalds' check of a matmul
    policy.py      job.yaml's ``verification`` text -> Strategy, and its canonical text
    signed.py      ResultClaim signed by the executor, Evidence signed by the coordinator, their checks
    reputation.py  Ledger: per-peer valid/invalid/timed-out counts, vetting (trust), crews, endorsements, bans
    accusation.py  a signed accusation of a proven wrong result, and how another peer judges it
    sybil.py       replicas never on peers sharing an IP /24 or joining in the same window; peer-ID proof of work
    replicated.py  Replicated: JobState's verified tasks, n executions each on peers it picks, until accepted

INTEGRATION.md says which events and commands the scheduler's parts use.
"""
