"""Screenshots of every dashboard page at 1280x800 into docs/dashboard/, from a real 3-peer devnet.

    python bench/dashboard_screenshots.py [--out docs/dashboard] [--inputs 12]

Run it from a directory outside a checkout with the checkout on PYTHONPATH (the devnet's daemons import
p2pcompute from the current directory first). Starts a devnet, signs in with ``p2pcompute dashboard``'s
link, submits a two-stage job from the Jobs page, waits for it, takes each page (and the Verification tab of
a second job, under ``replicate(3, agree=2)``; This machine while the first job runs again), then SIGKILLs peer 2
and takes the Network page once the others hold it dead. Needs Chromium (p2pcompute/dashboard/browser.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from p2pcompute.dashboard import browser
from p2pcompute.node.devnet import Devnet

JOB = """name: double-then-double
inputs:
  x: x/*.npy
stages:
  - name: d
    map: {over: inputs.x}
    ops: {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "y", "op": "add", "inputs": ["x", "x"]}],
          "outputs": ["y"]}
  - name: e
    inputs: {y: stages.d.outputs.y}
    map: {over: stages.d.outputs.y}
    ops: {"opset": 1, "inputs": {"y": {}}, "nodes": [{"name": "z", "op": "add", "inputs": ["y", "y"]}],
          "outputs": ["z"]}
"""
VERIFIED_JOB = """name: squares-checked
verification: "replicate(3, agree=2)"
inputs:
  x: x/scene0*.npy
stages:
  - name: sq
    map: {over: inputs.x}
    ops: {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "y", "op": "mul", "inputs": ["x", "x"]}],
          "outputs": ["y"]}
"""
MS = 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "dashboard")
    ap.add_argument("--inputs", type=int, default=12, help="files the job maps over (2 tasks each)")
    args = ap.parse_args()
    chromium, why = browser.find_chromium()
    if chromium is None:
        print(f"cannot take screenshots: {why}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="dash-shots-") as tmp:
        root = Path(tmp)
        os.chdir(root)
        (root / "ws" / "x").mkdir(parents=True)
        for i in range(args.inputs):
            np.save(root / "ws" / "x" / f"scene{i:02d}.npy", np.random.default_rng(i).random((256, 256)))
        net = Devnet(root / "net", 3)
        try:
            net.start()
            if not net.wait_connected(60):
                print("the devnet did not connect", file=sys.stderr)
                return 1
            base = (net.peers[0].data_dir / "api").read_text().strip()
            with sync_playwright() as p:
                b = browser.launch(p, chromium)
                page = b.new_page(viewport=browser.VIEWPORT)

                def shot(name: str) -> None:
                    page.wait_for_timeout(300)  # let the canvas draw after the last event
                    page.screenshot(path=str(args.out / f"{name}.png"))
                    print("wrote", args.out / f"{name}.png")

                page.goto(base + "/dashboard")
                page.wait_for_selector("#login:not([hidden])")
                shot("signed-out")
                page.goto(browser.login_url(net.peers[0].data_dir))
                page.wait_for_function("() => document.querySelectorAll('#members tr[data-state=alive]').length === 3",
                                       timeout=60 * MS)
                page.click("nav a[data-page=jobs]")
                page.click("#submit summary")
                page.fill("#job-text", JOB)
                page.fill("#job-base", str(root / "ws"))
                shot("jobs-submit")
                page.click("#submit-btn")
                page.wait_for_selector("#submitted-job", timeout=60 * MS)
                job_id = page.inner_text("#submitted-job")
                page.click("#submitted-job")
                page.wait_for_selector('#job-state[data-state="done"]', timeout=180 * MS)
                page.click("#tasks tbody tr:nth-child(3)")
                page.wait_for_selector("#attempts")
                page.click("#logs-btn")
                page.wait_for_selector("#task-detail pre >> nth=1", timeout=30 * MS)
                page.evaluate("document.querySelector('#task-detail').scrollIntoView()")
                shot("job-task")
                page.evaluate("window.scrollTo(0, 0)")
                shot("job-tasks")
                for tab in ("timeline", "dag", "results"):
                    page.click(f"#tab-{tab}")
                    page.wait_for_selector({"timeline": "#timeline[data-bars]", "dag": "#dag rect",
                                            "results": "#results tbody tr"}[tab], timeout=30 * MS)
                    shot(f"job-{tab}")
                page.goto(base + "/dashboard#/jobs")
                page.click("#submit summary")
                page.fill("#job-text", VERIFIED_JOB)
                page.fill("#job-base", str(root / "ws"))
                page.click("#submit-btn")
                page.wait_for_selector("#submitted-job", timeout=60 * MS)
                page.click("#submitted-job")
                page.wait_for_selector('#job-state[data-state="done"]', timeout=180 * MS)
                page.click("#tab-verification")
                page.wait_for_selector("#evidence tr[data-status=accepted]", timeout=30 * MS)
                page.evaluate("window.scrollTo(0, document.querySelector('.tabs').offsetTop - 60)")
                shot("job-verification")
                page.goto(base + "/dashboard#/jobs")
                page.wait_for_selector(f'#jobs tr[data-job="{job_id}"]')
                shot("jobs")
                page.click("nav a[data-page=data]")
                page.wait_for_selector("#pins tbody tr")
                shot("data")
                page.click("nav a[data-page=machine]")
                page.wait_for_selector("#protocols tr[data-protocol=membership]")
                time.sleep(4)
                page.evaluate("""(body) => fetch('/v1/jobs', {method: 'POST', headers: {'content-type':
                    'application/json'}, body: JSON.stringify(body)})""", {"job": JOB, "base": str(root / "ws")})
                time.sleep(12)  # a few points on the bytes-per-second chart, the job's traffic among them
                page.evaluate("window.scrollTo(0, document.querySelector('#workers-table').offsetTop - 60)")
                shot("machine")
                victim = net.peers[2]
                os.killpg(victim.process.pid, signal.SIGKILL)
                victim.process.wait(10)
                page.click("nav a[data-page=network]")
                page.wait_for_selector(f'#members tr[data-peer="{victim.status["peer_id"]}"][data-state="dead"]',
                                       timeout=90 * MS)
                shot("network")
                b.close()
        finally:
            net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
