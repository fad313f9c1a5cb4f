"""WebAssembly programs under wasmtime: WASI contract, determinism, fuel, refusals."""

from __future__ import annotations

import struct

import pytest

from p2pcompute.errors import UserError
from p2pcompute.ops.wasm import WasmRuntime

from wat_programs import LOOP, NO_START, NOT_WASI, PROBE


@pytest.fixture(scope="module")
def runtime():
    return WasmRuntime()


def dirs(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "data.bin").write_bytes(b"hello")
    return inputs, outputs


def run(runtime, tmp_path, source, **kw):
    program = tmp_path / "p.wat"
    program.write_text(source)
    inputs, outputs = dirs(tmp_path)
    options = dict(args=[], env={}, fuel=10_000_000, memory_limit=16 << 20)
    options.update(kw)
    return runtime.run(runtime.load(program), inputs_dir=inputs, outputs_dir=outputs,
                       log_dir=tmp_path, name="probe", **options)


def test_args_env_no_clock_deterministic_random_and_read_only_inputs(runtime, tmp_path):
    outcomes = []
    for attempt in range(2):
        base = tmp_path / str(attempt)
        base.mkdir()
        outcome = run(runtime, base, PROBE, args=["--band", "nir"], env={"MODE": "fast"})
        assert outcome.exit_code == 0 and not outcome.out_of_fuel and outcome.fuel_used > 0
        assert (base / "stdout.txt").read_bytes() == b"probe\0--band\0nir\0"
        assert (base / "stderr.txt").read_bytes() == b"MODE=fast\0"
        clock, rand, err = struct.unpack("<Q16sI", (base / "out" / "probe.bin").read_bytes())
        assert clock == 0
        assert err != 0 and not (base / "in" / "new.txt").exists()  # /inputs is read-only
        outcomes.append((rand, outcome.fuel_used))
    assert outcomes[0] == outcomes[1]  # same random bytes, same fuel: deterministic


def test_out_of_fuel_is_reported(runtime, tmp_path):
    outcome = run(runtime, tmp_path, LOOP, fuel=1_000_000)
    assert outcome.out_of_fuel and outcome.exit_code is None
    assert outcome.fuel_used == 1_000_000
    assert "fuel" in outcome.trap


@pytest.mark.parametrize("source, expected", [
    (NOT_WASI, "imports env.now; only wasi_snapshot_preview1 is provided"),
    (NO_START, "exports no _start function"),
    ("(module (func (export \"_start\") (i32.add)))", "does not compile"),
])
def test_programs_outside_the_contract_are_refused(runtime, tmp_path, source, expected):
    with pytest.raises(UserError, match=expected):
        run(runtime, tmp_path, source)
