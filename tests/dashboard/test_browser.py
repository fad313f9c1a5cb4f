"""The dashboard in a real browser (headless Chromium under Playwright) against a 3-peer devnet of real daemons.

One devnet and one browser serve the whole module; the tests run in file order and the last one kills a
peer. Waits are on conditions in the page (Playwright's waits, generous timeouts), never fixed sleeps; a
condition for ``wait_for_function`` is written as a function (``() => ...``): a bare expression would be
run by ``eval``, which the page's content security policy refuses.
Skipped, with the reason, only when no browser can be found (p2pcompute/dashboard/browser.py).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from p2pcompute.dashboard import browser
from p2pcompute.node.devnet import Devnet

CHROMIUM, WHY = browser.find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=f"no browser for the dashboard tests: {WHY}")

JOB = """
name: double-then-double
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
TASKS = 8
MS = 1000


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashnet")
    cwd = os.getcwd()
    os.chdir(root)          # the daemons import p2pcompute from here first: keep it free of checkouts
    net = Devnet(root / "net", 3)
    try:
        net.start()
        assert net.wait_connected(60), "the devnet's peers did not all see each other"
        yield net
    finally:
        net.stop()
        os.chdir(cwd)


@pytest.fixture(scope="module")
def page(net):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = browser.launch(p, CHROMIUM)
        context = b.new_context(viewport=browser.VIEWPORT)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        b.close()


def base_url(net) -> str:
    return (net.peers[0].data_dir / "api").read_text().strip()


def test_the_login_link_signs_in_and_shows_three_peers_alive(net, page):
    page.goto(base_url(net) + "/dashboard")              # without a session: how to get in
    page.wait_for_selector("#login:not([hidden])", timeout=30 * MS)
    assert "p2pcompute dashboard" in page.inner_text("#login")
    page.goto(browser.login_url(net.peers[0].data_dir))
    page.wait_for_function("() => document.querySelectorAll('#members tr[data-state=alive]').length === 3",
                           timeout=60 * MS)
    ids = {p.status["peer_id"] for p in net.peers}
    shown = set(page.eval_on_selector_all("#members tr[data-state=alive]", "rows => rows.map(r => r.dataset.peer)"))
    assert shown == ids
    page.wait_for_selector("#live.on", timeout=30 * MS)
    assert page.errors == []


def test_a_request_without_the_session_cookie_is_refused(net, page):
    url = base_url(net)
    assert httpx.get(url + "/dashboard/api/network").status_code == 401
    assert httpx.get(url + "/dashboard/events?view=network").status_code == 401
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert httpx.get(url + "/dashboard/api/network", cookies=cookies).status_code == 200
    refused = httpx.post(url + "/v1/jobs/cancel/x", cookies=cookies, json={}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    assert page.evaluate("""async () => (await fetch('/dashboard/api/network', {credentials: 'omit'})).status""") == 401


def submit_and_open(page, job_text: str, base) -> str:
    """On the Jobs page: submit ``job_text`` from the form, open the job's page and wait until it is done."""
    page.click("#submit summary")
    page.fill("#job-text", job_text)
    page.fill("#job-base", str(base))
    page.click("#submit-btn")
    page.wait_for_selector("#submitted-job", timeout=60 * MS)
    job_id = page.inner_text("#submitted-job")
    page.click("#submitted-job")
    page.wait_for_selector('#job-state[data-state="done"]', timeout=120 * MS)
    return job_id


def test_a_job_submitted_from_the_page_finishes_and_shows_its_timeline(net, page, tmp_path):
    (tmp_path / "x").mkdir()
    for i in range(TASKS // 2):
        np.save(tmp_path / "x" / f"x{i}.npy", np.full((2, 2), i, dtype=np.float32))
    page.click("nav a[data-page=jobs]")
    job_id = submit_and_open(page, JOB, tmp_path)
    assert page.inner_text("#count-done").startswith(str(TASKS))
    page.click("#tab-timeline")
    page.wait_for_selector("#timeline[data-bars]", timeout=30 * MS)
    assert int(page.get_attribute("#timeline", "data-bars")) >= TASKS
    assert 1 <= int(page.get_attribute("#timeline", "data-peers")) <= 3
    page.click("#tab-dag")
    page.wait_for_selector('#dag rect[data-stage="e"][data-state="done"]', timeout=30 * MS)
    page.click("#tab-results")
    page.wait_for_function(f"() => document.querySelectorAll('#results a').length === {TASKS // 2}",
                           timeout=30 * MS)
    links = page.eval_on_selector_all("#results a", "as => as.map(a => a.getAttribute('href'))")
    assert len(links) == TASKS // 2
    assert page.evaluate("async (u) => (await fetch(u)).status", links[0]) == 200
    page.click("#tab-verification")                   # not a verified job: its tab says so
    page.wait_for_selector("#not-verified", timeout=30 * MS)
    page.goto(base_url(net) + "/dashboard#/jobs")
    page.wait_for_selector(f'#jobs tr[data-job="{job_id}"][data-state="done"]', timeout=30 * MS)
    assert page.errors == []


VERIFIED_JOB = """
name: doubled-twice-over
verification: "replicate(2, agree=2)"
inputs:
  x: x/*.npy
stages:
  - name: d
    map: {over: inputs.x}
    ops: {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "y", "op": "add", "inputs": ["x", "x"]}],
          "outputs": ["y"]}
"""


def test_a_verified_job_shows_two_executions_agreeing_on_different_peers(net, page, tmp_path):
    (tmp_path / "x").mkdir()
    for i in range(2):
        np.save(tmp_path / "x" / f"v{i}.npy", np.full((2, 2), 10 + i, dtype=np.float32))
    page.goto(base_url(net) + "/dashboard#/jobs")
    job_id = submit_and_open(page, VERIFIED_JOB, tmp_path)
    page.click("#tab-verification")
    page.wait_for_function("() => document.querySelectorAll('#evidence tr[data-status=accepted]').length === 2",
                           timeout=30 * MS)
    assert page.inner_text("#v-strategy") == "replicate(2, agree=2)"
    assert page.inner_text("#v-accepted") == "2 / 2"
    ids = {p.status["peer_id"] for p in net.peers}
    for task in page.eval_on_selector_all("#evidence tr[data-status=accepted]", "rows => rows.map(r => r.dataset.task)"):
        row = f'#evidence tr[data-task="{task}"]'
        agreed = page.eval_on_selector_all(f"{row} tr[data-verdict=agreed]", "rows => rows.map(r => r.dataset.peer)")
        assert len(agreed) == 2 and len(set(agreed)) == 2 and set(agreed) <= ids, agreed
        signers = page.eval_on_selector_all(f"{row} .signer", "els => els.map(e => e.title)")
        assert sorted(signers) == sorted(agreed)        # both signed claims of the accepted outputs
        assert "signatures valid" in page.inner_text(row)
    assert page.evaluate("() => location.hash").endswith(f"{job_id}/verification")
    assert page.errors == []


SPIN = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'


def test_a_running_job_is_cancelled_from_its_page(net, page, tmp_path):
    program = None
    for peer in net.peers:    # a local program cannot be submitted yet: every peer holds it by CID
        with httpx.Client(base_url=(peer.data_dir / "api").read_text().strip(), timeout=30,
                          headers={"authorization": "Bearer " + (peer.data_dir / "api_token").read_text().strip()}) as c:
            program = c.post("/v1/add", content=SPIN.encode()).json()["cid"]
    page.goto(base_url(net) + "/dashboard#/jobs")
    page.click("#submit summary")
    page.fill("#job-text", f"name: spin-forever\nretries: 0\nprogram: ipfs://{program}\nlimits: {{fuel: 1000000000000}}\n")
    page.fill("#job-base", str(tmp_path))
    page.click("#submit-btn")
    page.wait_for_selector("#submitted-job", timeout=60 * MS)
    page.click("#submitted-job")
    page.wait_for_selector('#tasks tr[data-state="running"]', timeout=60 * MS)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-btn")
    page.wait_for_selector('#job-state[data-state="cancelled"]', timeout=60 * MS)
    assert page.is_disabled("#cancel-btn")
    assert page.errors == []


def test_the_machine_page_and_metrics_show_bytes_per_protocol(net, page):
    """The daemons have gossiped and run jobs: /metrics counts bytes by protocol, the page their rates."""
    peer = net.peers[0]
    token = (peer.data_dir / "api_token").read_text().strip()
    text = httpx.get(base_url(net) + "/metrics", headers={"authorization": "Bearer " + token}).text
    for protocol in ("membership", "scheduler", "node"):
        for direction in ("sent", "received"):
            line = re.search(r'^p2pcompute_protocol_bytes_total\{direction="%s",protocol="%s"\} (\S+)$'
                             % (direction, protocol), text, re.M)
            assert line and float(line.group(1)) > 0, (protocol, direction)
    page.click("nav a[data-page=machine]")
    # membership pings every peer about once a second: within a few samples its rate is above zero both ways
    page.wait_for_function("""() => ['bytes-sent', 'bytes-received'].every((c) => {
        const td = document.querySelector('#protocols tr[data-protocol=membership] td.' + c);
        return td && /[1-9]/.test(td.textContent); })""", timeout=60 * MS)
    assert "membership" in page.get_attribute("#bytes-chart", "data-protocols")
    assert page.errors == []


def test_a_killed_peer_turns_dead_on_the_network_page(net, page):
    victim = net.peers[2]
    page.click("nav a[data-page=network]")
    page.wait_for_selector(f'#members tr[data-peer="{victim.status["peer_id"]}"][data-state="alive"]', timeout=30 * MS)
    os.killpg(victim.process.pid, signal.SIGKILL)     # no goodbye: the others must find out
    victim.process.wait(10)
    page.wait_for_selector(f'#members tr[data-peer="{victim.status["peer_id"]}"][data-state="dead"]', timeout=90 * MS)
    assert page.inner_text("#count-dead") == "1"
    assert page.errors == []
