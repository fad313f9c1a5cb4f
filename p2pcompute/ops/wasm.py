"""Deterministic WebAssembly programs under wasmtime: WASI, fuel and memory limits.

The contract a program sees:

* a WASI preview-1 command module (exports ``_start``, imports only from
  ``wasi_snapshot_preview1``; anything else is refused before it runs);
* ``/inputs`` preopened read-only (file descriptor 3) and ``/outputs``
  preopened writable (file descriptor 4), both directories of the task's
  private scratch dir; arguments and environment come from the job, nothing
  is inherited from the host;
* no clock, randomness or network: ``clock_time_get`` always answers 0,
  ``clock_res_get`` 1 ns, ``random_get`` fills buffers from a fixed
  SHA-256 counter stream (so programs that seed hash maps still run and stay
  reproducible), ``poll_oneoff`` (sleeping) is refused with ENOTSUP, and no
  sockets are ever granted;
* every instruction costs fuel; when the budget runs out the program is
  stopped and reported as ``resource_exceeded: fuel``. Linear memory is
  capped (``memory.grow`` returns -1 past the cap). Float NaNs are
  canonicalised and relaxed SIMD is deterministic, so results are
  bit-identical on every machine.

Compiled modules are cached per worker by the sha256 of their bytes (a small
LRU): a cache of compiled code is not task state.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from ..errors import UserError

WASI = "wasi_snapshot_preview1"
MAX_PROGRAM_BYTES = 64 << 20
CACHE_SIZE = 8
ENOTSUP = 58
EINVAL = 28
MAX_RANDOM = 1 << 24


@dataclass(frozen=True)
class WasmOutcome:
    exit_code: int | None      # None if it trapped
    fuel_used: int
    out_of_fuel: bool = False
    trap: str = ""
    memory_bytes: int = 0      # linear memory size when it stopped


class WasmRuntime:
    """One engine and a module cache; ``run`` makes a fresh store per program run."""

    def __init__(self) -> None:
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.cranelift_nan_canonicalization = True
        cfg.wasm_relaxed_simd_deterministic = True
        cfg.wasm_threads = False
        cfg.memory_reservation = 0          # no multi-GiB reservations: RLIMIT_AS stays meaningful
        cfg.memory_guard_size = 1 << 16
        cfg.memory_reservation_for_growth = 1 << 20
        self.engine = wasmtime.Engine(cfg)
        self._cache: OrderedDict[str, wasmtime.Module] = OrderedDict()

    def load(self, path: str | Path) -> wasmtime.Module:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_PROGRAM_BYTES:
                raise UserError(f"program {path} is larger than {MAX_PROGRAM_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"program {path}: {exc.strerror}") from None
        key = hashlib.sha256(data).hexdigest()
        module = self._cache.get(key)
        if module is None:
            module = self._compile(path, data)
            self._cache[key] = module
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return module

    def _compile(self, path: Path, data: bytes) -> wasmtime.Module:
        try:
            source: str | bytes = data
            if path.suffix == ".wat":
                source = data.decode("utf-8")
            module = wasmtime.Module(self.engine, source)
        except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
            raise UserError(f"program {path.name} does not compile: {str(exc).splitlines()[0]}") from None
        for imp in module.imports:
            if imp.module != WASI:
                raise UserError(f"program {path.name} imports {imp.module}.{imp.name}; only "
                                f"{WASI} is provided")
        if not any(e.name == "_start" for e in module.exports):
            raise UserError(f"program {path.name} exports no _start function")
        return module

    def run(self, module: wasmtime.Module, *, inputs_dir: Path, outputs_dir: Path,
            args: list[str], env: dict[str, str], fuel: int, memory_limit: int,
            log_dir: Path, name: str = "program") -> WasmOutcome:
        store = wasmtime.Store(self.engine)
        store.set_fuel(fuel)
        store.set_limits(memory_size=memory_limit, instances=4, tables=4, memories=1)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [name, *args]
        wasi.env = [(k, v) for k, v in env.items()]
        wasi.preopen_dir(str(inputs_dir), "/inputs", False)
        wasi.preopen_dir(str(outputs_dir), "/outputs", True)
        wasi.stdout_file = str(log_dir / "stdout.txt")
        wasi.stderr_file = str(log_dir / "stderr.txt")
        store.set_wasi(wasi)
        try:
            instance = self._linker().instantiate(store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise UserError(f"program {name} cannot start: {str(exc).splitlines()[0]}") from None
        exports = instance.exports(store)
        exit_code, trap, out_of_fuel = 0, "", False
        try:
            exports["_start"](store)
        except wasmtime.ExitTrap as exc:
            exit_code = exc.code
        except wasmtime.Trap as exc:
            exit_code, out_of_fuel = None, exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
            trap = str(exc).splitlines()[-1].strip()
        except wasmtime.WasmtimeError as exc:
            exit_code, trap = None, str(exc).splitlines()[0]
        memory = exports.get("memory") if hasattr(exports, "get") else None
        size = memory.data_len(store) if isinstance(memory, wasmtime.Memory) else 0
        return WasmOutcome(exit_code, fuel - store.get_fuel(), out_of_fuel, trap, size)

    def _linker(self) -> wasmtime.Linker:
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        linker.allow_shadowing = True
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        stream = _Stream()
        shims = {
            "clock_time_get": ([i32, i64, i32], lambda c, cid, prec, ptr: _put(c, ptr, struct.pack("<Q", 0))),
            "clock_res_get": ([i32, i32], lambda c, cid, ptr: _put(c, ptr, struct.pack("<Q", 1))),
            "random_get": ([i32, i32], lambda c, ptr, n: _put(c, ptr, stream.take(n))
                           if 0 <= n <= MAX_RANDOM else EINVAL),
            "poll_oneoff": ([i32, i32, i32, i32], lambda c, *a: ENOTSUP),
        }
        for fname, (params, fn) in shims.items():
            linker.define_func(WASI, fname, wasmtime.FuncType(params, [i32]), fn, access_caller=True)
        return linker


class _Stream:
    """Deterministic bytes: SHA-256 of a counter."""

    def __init__(self) -> None:
        self.counter = 0

    def take(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += hashlib.sha256(self.counter.to_bytes(8, "little")).digest()
            self.counter += 1
        return bytes(out[:n])


def _put(caller: wasmtime.Caller, ptr: int, data: bytes) -> int:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory) or ptr < 0 or ptr + len(data) > memory.data_len(caller):
        return 21  # EFAULT
    memory.write(caller, data, ptr)
    return 0
