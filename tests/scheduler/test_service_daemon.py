"""The scheduler's control-API routes on real daemons (subprocesses, the default services):
POST /v1/jobs with a job.yaml and its base dir, GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/cancel/{id}."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from p2pcompute.errors import P2PComputeError
from p2pcompute.node.client import ApiError, ControlClient
from test_cli import start_daemon, stop

JOB = """
name: double
inputs:
  x: x/*.npy
stages:
  - name: d
    map: {over: inputs.x}
    ops: {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "y", "op": "add", "inputs": ["x", "x"]}],
          "outputs": ["y"]}
"""

STARVED = """
name: starved
retries: 0
inputs: {blue: {path: s.tif, band: 0}, green: {path: s.tif, band: 1}, red: {path: s.tif, band: 2},
         nir: {path: s.tif, band: 3}, swir1: {path: s.tif, band: 4}}
program: builtin:cloud_detect.wat
limits: {fuel: 1}
"""


def test_a_job_submitted_over_the_api_of_one_of_two_daemons_completes_with_its_results_there(tmp_path):
    for i in range(4):
        (tmp_path / "x").mkdir(exist_ok=True)
        np.save(tmp_path / "x" / f"x{i}.npy", np.full((2, 2), i, dtype=np.float32))
    a, a_status = start_daemon(tmp_path / "a")
    try:
        boot = next(x for x in a_status["addresses"] if "/127.0.0.1/" in x)
        b, _ = start_daemon(tmp_path / "b", "--bootstrap", boot)
        try:
            client = ControlClient(tmp_path / "a", timeout=60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:     # b is known (alive, with its capabilities) before we submit
                if any(p.get("state") == "alive" and p.get("free_slots") for p in client.peers()):
                    break
                time.sleep(0.3)
            with pytest.raises(ApiError, match="problem"):
                client._call("POST", "/v1/jobs", {"job": "name: x\nstages: 3\n", "base": str(tmp_path)})
            job = client._call("POST", "/v1/jobs", {"job": JOB, "base": str(tmp_path)})
            assert job["tasks"] == 4
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                described = client._call("GET", f"/v1/jobs/{job['job_id']}")
                if described["state"] in ("done", "failed", "cancelled"):
                    break
                time.sleep(0.3)
            assert described["state"] == "done", described["reason"]
            assert described["progress"]["done"] == 4 and len(described["outputs"]) == 4
            assert all(t["state"] == "done" and t["attempts"] for t in described["tasks"])
            listed = client._call("GET", "/v1/jobs")["jobs"]
            assert [j["job_id"] for j in listed] == [job["job_id"]]
            # the outputs are here: cat one of them
            cid = described["outputs"][3][2]
            data = client.request("GET", "/v1/cat", params={"cid": cid}).content
            from p2pcompute.ops import tensor_format
            np.testing.assert_array_equal(tensor_format.decode(data), np.full((2, 2), 6, dtype=np.float32))
            # cancelling a finished job changes nothing; an unknown one is a 404
            assert client._call("POST", f"/v1/jobs/cancel/{job['job_id']}", {})["state"] == "done"
            with pytest.raises(ApiError, match="no job"):
                client._call("POST", "/v1/jobs/cancel/nope", {})
            assert "scheduler" in json.dumps(client.status())
            # through b, which neither coordinates it nor was it submitted through: jobs --all, describe,
            # logs and results find it at a; a cancel of the finished job changes nothing
            from test_cli import run
            home_b = ["--data-dir", str(tmp_path / "b")]
            assert json.loads(run(*home_b, "jobs", "--json").stdout) == []
            everything = json.loads(run(*home_b, "jobs", "--all", "--json").stdout)
            assert [j["job_id"] for j in everything["jobs"]] == [job["job_id"]] and everything["peers_answered"] == 1
            assert json.loads(run(*home_b, "describe", job["job_id"], "--json").stdout)["state"] == "done"
            logs = json.loads(run(*home_b, "logs", job["job_id"], "--json").stdout)
            assert len(logs["tasks"]) == 4 and all(t["attempts"][-1]["outcome"] == "ok" for t in logs["tasks"])
            res = run(*home_b, "results", job["job_id"], "-o", str(tmp_path / "via_b"))
            assert res.returncode == 0 and len(list((tmp_path / "via_b").rglob("*.tensor"))) == 4, res.stderr
            res = run(*home_b, "cancel", job["job_id"], "--json")
            assert res.returncode == 0 and json.loads(res.stdout)["state"] == "done"
        finally:
            stop(b)
    finally:
        stop(a)


def test_submit_jobs_describe_results_and_cancel_from_the_command_line(tmp_path):
    """The CLI as a user types it, against a lone daemon (it runs every task itself)."""
    from test_cli import run

    (tmp_path / "x").mkdir()
    for i in range(3):
        np.save(tmp_path / "x" / f"x{i}.npy", np.full((2, 2), i, dtype=np.float32))
    (tmp_path / "job.yaml").write_text(JOB)
    (tmp_path / "bad.yaml").write_text("name: x\nstages: 3\n")
    a, _ = start_daemon(tmp_path / "a")
    home = ["--data-dir", str(tmp_path / "a")]
    try:
        res = run(*home, "submit", str(tmp_path / "job.yaml"), "-o", str(tmp_path / "out"), timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "done: 3 tasks done" in res.stdout
        written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.tensor"))
        assert written == [f"d/0000{i}/y/0000{i}.tensor" for i in range(3)]
        from p2pcompute.ops import tensor_format
        for i in range(3):
            got = tensor_format.decode((tmp_path / "out" / written[i]).read_bytes())
            np.testing.assert_array_equal(got, np.full((2, 2), 2 * i, dtype=np.float32))

        jobs = json.loads(run(*home, "jobs", "--json").stdout)
        assert [j["state"] for j in jobs] == ["done"]
        job_id = jobs[0]["job_id"]
        described = json.loads(run(*home, "describe", job_id, "--json").stdout)
        assert [t["state"] for t in described["tasks"]] == ["done"] * 3
        res = run(*home, "results", job_id, "-o", str(tmp_path / "again"))
        assert res.returncode == 0 and len(list((tmp_path / "again").rglob("*.tensor"))) == 3

        detached = run(*home, "submit", "--detach", str(tmp_path / "job.yaml"))
        assert detached.returncode == 0 and detached.stdout.strip().startswith("j")
        assert run(*home, "cancel", detached.stdout.strip()).returncode == 0  # done already, or cancelled now

        bad = run(*home, "submit", str(tmp_path / "bad.yaml"))
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert "stages" in bad.stderr
        missing = run(*home, "describe", "nope")
        assert missing.returncode == 1 and "no job nope" in missing.stderr
    finally:
        stop(a)


def test_the_python_client_submits_waits_and_reads_results(tmp_path):
    from p2pcompute import Client, JobFailed

    (tmp_path / "x").mkdir()
    for i in range(2):
        np.save(tmp_path / "x" / f"x{i}.npy", np.full((3,), i + 1, dtype=np.float32))
    a, _ = start_daemon(tmp_path / "a")
    try:
        with Client(tmp_path / "a") as client:
            job = client.submit(JOB, base=tmp_path)
            assert job.wait(timeout=120)["state"] == "done"
            results = job.results()
            assert sorted(results) == [("d/00000", "y/00000"), ("d/00001", "y/00001")]
            np.testing.assert_array_equal(results[("d/00001", "y/00001")], np.full((3,), 4, dtype=np.float32))
            assert [j["job_id"] for j in client.jobs()] == [job.id]
            with pytest.raises(P2PComputeError, match="unknown operator 'no_such_op'"):  # refused at submit
                client.submit(JOB.replace('"add"', '"no_such_op"'), base=tmp_path)
            with pytest.raises(P2PComputeError, match="no such job file"):
                client.submit(tmp_path / "missing.yaml")
            from p2pcompute.ops import scene
            scene.write_geotiff(tmp_path / "s.tif", scene.make_scene(32, 1))
            starved = client.submit(STARVED, base=tmp_path)  # one unit of WebAssembly fuel: fails wherever it runs
            with pytest.raises(JobFailed, match="fuel"):
                starved.wait(timeout=120)
    finally:
        stop(a)


def test_logs_shows_each_attempts_stderr_from_the_command_line_and_the_python_client(tmp_path):
    """`p2pcompute logs JOB [TASK]` (and --json, and Job.logs()) on a lone daemon: a program that writes to its
    stderr and succeeds, one that writes and fails (each attempt's stderr), a graph task that writes none."""
    from test_cli import run
    from test_service_logs import program

    from p2pcompute import Client

    (tmp_path / "ok.wat").write_text(program("warning: 3 pixels saturated", 0))
    (tmp_path / "bad.wat").write_text(program("error: band 4 is missing", 3))
    (tmp_path / "x").mkdir()
    np.save(tmp_path / "x" / "x0.npy", np.ones((2, 2), dtype=np.float32))
    a, _ = start_daemon(tmp_path / "a")
    home = ["--data-dir", str(tmp_path / "a")]
    try:
        cids = {}
        for name in ("ok", "bad"):
            added = run(*home, "add", str(tmp_path / f"{name}.wat"))
            assert added.returncode == 0, added.stderr
            cids[name] = added.stdout.strip()
        (tmp_path / "ok.yaml").write_text(f"name: ok\nprogram: ipfs://{cids['ok']}\n")
        (tmp_path / "bad.yaml").write_text(f"name: bad\nretries: 1\nprogram: ipfs://{cids['bad']}\n")
        (tmp_path / "quiet.yaml").write_text(JOB)
        ids = {}
        for name in ("ok", "bad", "quiet"):
            res = run(*home, "submit", str(tmp_path / f"{name}.yaml"), "--json", timeout=180)
            assert res.returncode == (1 if name == "bad" else 0), res.stdout + res.stderr
            ids[name] = json.loads(res.stdout)["job_id"]

        shown = run(*home, "logs", ids["ok"])
        assert shown.returncode == 0, shown.stderr
        assert "| warning: 3 pixels saturated" in shown.stdout and "attempt 1 on 12D3KooW" in shown.stdout

        bad = json.loads(run(*home, "logs", ids["bad"], "--json").stdout)
        [task] = bad["tasks"]
        assert [x["stderr"] for x in task["attempts"]] == ["error: band 4 is missing\n"] * 2
        assert [x["outcome"] for x in task["attempts"]] == ["failed", "failed"]
        text = run(*home, "logs", ids["bad"], task["task"]).stdout
        assert text.count("| error: band 4 is missing") == 2 and "attempt 2 on" in text and "exit code 3" in text

        quiet = run(*home, "logs", ids["quiet"], "d/00000")
        assert quiet.returncode == 0 and "(no stderr)" in quiet.stdout
        missing = run(*home, "logs", ids["quiet"], "nope")
        assert missing.returncode == 1 and "has no task nope" in missing.stderr

        # jobs filters by state; describe shows where inputs came from, the attempts' peers, times and stderr size
        failed = json.loads(run(*home, "jobs", "--state", "failed", "--json").stdout)
        assert [j["job_id"] for j in failed] == [ids["bad"]]
        done = json.loads(run(*home, "jobs", "--state", "done", "--json").stdout)
        assert sorted(j["job_id"] for j in done) == sorted([ids["ok"], ids["quiet"]])
        assert json.loads(run(*home, "jobs", "--state", "running", "--json").stdout) == []
        described = json.loads(run(*home, "describe", ids["quiet"], "--json").stdout)
        assert [(i["input"], i["from"], i["source"]) for i in described["inputs"]] == \
            [("x", "file", str(tmp_path / "x" / "x0.npy"))]
        described = json.loads(run(*home, "describe", ids["ok"], "--json").stdout)
        [attempt] = described["tasks"][0]["attempts"]
        assert attempt["end"] >= attempt["start"] >= described["created"] and described["clock"] >= attempt["end"]
        assert attempt["log_bytes"] == 28 and attempt["peer"].startswith("12D3KooW")
        text = run(*home, "describe", ids["quiet"]).stdout
        assert "inputs:" in text and f"file   {tmp_path / 'x' / 'x0.npy'}" in text and " on 12D3KooW" in text
        text = run(*home, "describe", ids["ok"]).stdout
        assert "stderr 28 bytes" in text and " at +" in text
        for cmd in (("jobs",), ("describe", ids["ok"]), ("logs", ids["ok"]), ("cancel", ids["ok"]),
                    ("results", ids["ok"], "-o", str(tmp_path / "r"))):
            res = run(*home, *cmd, "--json")
            assert res.returncode == 0 and json.loads(res.stdout) is not None, (cmd, res.stderr)

        with Client(tmp_path / "a") as client:
            assert [j["job_id"] for j in client.jobs(state="failed")] == [ids["bad"]]
            got = client.job(ids["ok"]).logs()
            assert got["tasks"][0]["attempts"][0]["stderr"] == "warning: 3 pixels saturated\n"
            assert client.job(ids["quiet"]).logs(task="d/00000")["tasks"][0]["attempts"][0]["stderr"] == ""
    finally:
        stop(a)


def test_submit_a_url_and_a_handle_registered_on_another_daemon_from_the_command_line(tmp_path):
    """A job whose inputs are a URL (a real HTTP server on loopback) and a handle that daemon b registered (a
    publishes nothing: it resolves the handle through the DHT); a fetches the URL itself. describe says where
    each input came from; a URL that answers 404 refuses the job naming it."""
    import http.server
    import threading

    from test_cli import run

    www = tmp_path / "www"
    www.mkdir()
    for i in range(2):
        np.save(www / f"w{i}.npy", np.full((2, 2), 10 + i, dtype=np.float32))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=str(www), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    a, a_status = start_daemon(tmp_path / "a")
    try:
        boot = next(x for x in a_status["addresses"] if "/127.0.0.1/" in x)
        b, _ = start_daemon(tmp_path / "b", "--bootstrap", boot)
        try:
            home = ["--data-dir", str(tmp_path / "a")]
            deadline = time.monotonic() + 60
            while True:        # b's record goes into the DHT once the two know each other
                reg = run("--data-dir", str(tmp_path / "b"), "data", "register", f"{base}/w1.npy", "--json")
                assert reg.returncode == 0, reg.stderr
                registered = json.loads(reg.stdout)
                if registered["dht"].get("stored_on", 0) or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            assert registered["dht"].get("stored_on"), registered
            handle = registered["handle"]
            (tmp_path / "job.yaml").write_text(JOB.replace("x/*.npy", json.dumps([f"{base}/w0.npy", handle])))
            res = run(*home, "submit", str(tmp_path / "job.yaml"), "--json", "-o", str(tmp_path / "out"), timeout=180)
            assert res.returncode == 0, res.stdout + res.stderr
            job_id = json.loads(res.stdout)["job_id"]
            from p2pcompute.ops import tensor_format
            for i in range(2):
                [path] = (tmp_path / "out" / f"d/0000{i}").rglob("*.tensor")
                np.testing.assert_array_equal(tensor_format.decode(path.read_bytes()),
                                              np.full((2, 2), 2 * (10 + i), dtype=np.float32))
            described = json.loads(run(*home, "describe", job_id, "--json").stdout)
            assert [(i["from"], i["source"]) for i in described["inputs"]] == \
                [("url", f"{base}/w0.npy"), ("handle", handle)]
            (tmp_path / "gone.yaml").write_text(JOB.replace("x/*.npy", f"{base}/gone.npy"))
            gone = run(*home, "submit", str(tmp_path / "gone.yaml"))
            assert gone.returncode == 1 and f"{base}/gone.npy: the server answered HTTP 404" in gone.stderr
        finally:
            stop(b)
    finally:
        stop(a)
        server.shutdown()
