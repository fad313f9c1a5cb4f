"""Profile the per-task path of the scheduler on one lone in-process peer (real libp2p node, one slot).

    python bench/profile_lone_peer.py [N] [cumulative|tottime]

Submits the map job of tests/scheduler/test_service_net.py over N small arrays (default 200) to a lone
peer, waits for it, and prints the wall time per task, the attempts' outcomes, the leases' counters (an
offer the executor declined shows as ``declined``) and the cProfile table of the whole run (coordinator and
executor roles in this process; the operator itself runs in the executor's warm worker process).
Run it from outside a checkout with the checkout on PYTHONPATH.
"""

import collections
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE / "tests" / "scheduler"), str(HERE / "tests")]
import test_service_net as net  # noqa: E402  (the test suite's peer and job helpers)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ORDER = sys.argv[2] if len(sys.argv) > 2 else "cumulative"


async def main(root: Path) -> None:
    net.workspace(root, N)
    async with trio.open_nursery() as nursery:
        nodes, _ = await net.start_peers(nursery, root, n=1)
        svc = nodes[0].services["scheduler"]
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        _, _, body = await svc._api_submit(json.dumps({"job": net.JOB, "base": str(root)}).encode(), {})
        job_id = json.loads(body)["job_id"]
        report = await svc.wait(job_id)
        profile.disable()
        took = time.perf_counter() - started
        print(f"{report.kind} {report.reason}: {took:.2f} s for {N} tasks, {1000 * took / N:.1f} ms/task "
              f"(under cProfile), {svc.leases.slots} slot(s)")
        js = svc.jobs[job_id].js
        print("attempts:", collections.Counter(x["outcome"] for t in js.tasks.values() for x in t.attempts))
        print("leases:", dict(svc.leases.stats))
        pstats.Stats(profile).sort_stats(ORDER).print_stats(40)
        nursery.cancel_scope.cancel()


trio.run(main, Path(tempfile.mkdtemp(prefix="p2pcompute-profile-")))
