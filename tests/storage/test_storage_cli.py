"""`p2pcompute add/cat/get/car/storage` on a temp data dir, no daemon: in-process through the CLI's
``main`` (fast), plus one real subprocess as a user runs it."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from p2pcompute.cli.main import main
from p2pcompute.storage.importer import import_bytes

CLI = [sys.executable, "-m", "p2pcompute"]


@pytest.fixture
def run(capsysbinary):
    def run(*args, data_dir):
        code = main(list(args) + ["--data-dir", str(data_dir)])
        out, err = capsysbinary.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def test_add_cat_get_car_round_trip(tmp_path, run):
    home = tmp_path / "home"
    src = tmp_path / "f.bin"
    data = os.urandom(700_000)
    src.write_bytes(data)

    v0 = run("add", str(src), data_dir=home)
    assert v0.returncode == 0, v0.stderr
    cid = v0.stdout.decode().strip()
    assert cid.startswith("Qm")
    v1 = json.loads(run("add", str(src), "--cid-version", "1", "--json", data_dir=home).stdout)
    assert v1["cid"].startswith("bafy") and v1["size"] == len(data) and v1["pinned"]
    hashed = run("add", str(src), "--cid-version", "1", "--no-raw-leaves", "--only-hash", data_dir=tmp_path / "none")
    assert hashed.stdout.decode().strip().startswith("bafy") and not (tmp_path / "none").exists()

    cat = run("cat", cid, "--offset", "10", "--length", "100000", data_dir=home)
    assert cat.returncode == 0 and cat.stdout == data[10:100010]
    out = tmp_path / "out.bin"
    assert run("get", v1["cid"], "-o", str(out), data_dir=home).returncode == 0
    assert out.read_bytes() == data

    car_file = tmp_path / "f.car"
    assert run("car", "export", cid, "-o", str(car_file), data_dir=home).returncode == 0
    imported = json.loads(run("car", "import", str(car_file), "--json", data_dir=tmp_path / "other").stdout)
    assert imported["roots"] == [cid] and imported["pinned"] == [cid]
    assert run("cat", cid, data_dir=tmp_path / "other").stdout == data

    pins = json.loads(run("storage", "pins", "--json", data_dir=home).stdout)
    assert set(pins["pins"]) == {cid, v1["cid"]}
    assert run("storage", "unpin", cid, data_dir=home).returncode == 0
    gc = json.loads(run("storage", "gc", "--json", data_dir=home).stdout)
    assert gc["removed"] > 0
    assert run("cat", cid, data_dir=home).returncode == 1
    assert run("cat", v1["cid"], data_dir=home).stdout == data


def test_directory_get_and_user_errors(tmp_path, run):
    home = tmp_path / "home"
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"alpha")
    (d / "sub" / "b.txt").write_bytes(b"beta")
    cid = run("add", str(d), data_dir=home).stdout.decode().strip()
    out = tmp_path / "copy"
    assert run("get", cid, "-o", str(out), data_dir=home).returncode == 0
    assert (out / "a.txt").read_bytes() == b"alpha" and (out / "sub" / "b.txt").read_bytes() == b"beta"

    for args, needle in [(("cat", cid), b"is a directory"), (("cat", "Qmnotacid"), b"CID"),
                         (("get", cid, "-o", str(out)), b"already exists"),
                         (("add", str(tmp_path / "missing")), b"does not exist"),
                         (("cat", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"), b"no daemon runs to fetch it")]:
        res = run(*args, data_dir=home)
        assert res.returncode == 1 and needle in res.stderr, (args, res.stderr)
        assert b"Traceback" not in res.stderr


def test_subprocess_add_then_cat(tmp_path):
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello\n")
    home = str(tmp_path / "home")
    add = subprocess.run(CLI + ["add", str(src), "--data-dir", home], capture_output=True, timeout=60)
    assert add.returncode == 0, add.stderr
    assert add.stdout.decode().strip() == str(import_bytes(b"hello\n").cid)
    cat = subprocess.run(CLI + ["cat", add.stdout.decode().strip(), "--data-dir", home], capture_output=True,
                         timeout=60)
    assert cat.returncode == 0 and cat.stdout == b"hello\n"
