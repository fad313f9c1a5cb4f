"""Operator and executor figures for the closing note of the operators issue.

    python bench/bench_ops.py [--tasks 1000] [--repeats 7] [--json]

Prints:
  * per-task executor overhead with warm workers: a tiny graph task (8 floats
    inline, mul + reduce_sum) submitted one after another to a 1-worker
    executor, round trip seen by the caller: median, p99; the same with the
    input read from a .npy file;
  * operator graph vs the same numpy code by hand, 2048x2048 float32
    matmul -> add -> relu -> reduce_sum, in this process (same BLAS, same
    threads): median of each and the ratio;
  * cloud detection on the 10 MB synthetic scene: compute only (bands in
    memory; the WebAssembly program reads its band files from a warm page
    cache and writes its outputs) for the graph, the WebAssembly program and
    plain numpy; then whole `run --local` jobs (GeoTIFF decode, executor,
    PNG) for the graph and the program.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from p2pcompute import tensor as t
from p2pcompute.ops import cloud, jobfile, scene, tensor_format
from p2pcompute.ops.executor import open_executor
from p2pcompute.ops.tasks import InputFile, Task
from p2pcompute.ops.wasm import WasmRuntime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_overhead(n: int, tmp: Path) -> dict:
    graph, _ = t.to_graph((t.input("x", "float32", [8]) * 2.0).reduce_sum())
    data = np.arange(8, dtype=np.float32)
    np.save(tmp / "x.npy", data)
    inline = Task("graph", inputs={"x": InputFile(data=tensor_format.encode(data))}, graph=graph.to_cbor())
    from_file = Task("graph", inputs={"x": InputFile(str(tmp / "x.npy"))}, graph=graph.to_cbor())

    async def main() -> dict:
        out = {}
        async with open_executor(cpus=1) as executor:
            await executor.wait_ready()
            for name, task in (("inline", inline), ("npy_file", from_file)):
                for _ in range(50):  # warm caches
                    await executor.run(task)
                times, inside = [], []
                for _ in range(n):
                    start = time.perf_counter()
                    result = await executor.run(task)
                    times.append(time.perf_counter() - start)
                    inside.append(result.wall_seconds)
                    assert result.ok and result.outputs["out0"]["value"] == 56.0
                out[name] = {"median_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * pct(times, 0.99),
                             "in_worker_median_ms": 1e3 * statistics.median(inside)}
        return out

    return trio.run(main)


def timed(fn, repeats: int) -> float:
    fn()
    return statistics.median(_once(fn) for _ in range(repeats))


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_graph_vs_numpy(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((2048, 2048), dtype=np.float32) for _ in range(2))
    c = rng.standard_normal(2048, dtype=np.float32)
    graph, feeds = t.to_graph(t.from_numpy(a, "a").matmul(t.from_numpy(b, "b"))
                              .add(t.from_numpy(c, "c")).relu().reduce_sum())
    by_hand = timed(lambda: np.maximum(a @ b + c, np.float32(0)).sum(dtype=np.float32), repeats)
    as_graph = timed(lambda: graph.run(feeds), repeats)
    same = graph.run(feeds)["out0"].tobytes() == \
        np.asarray(np.maximum(a @ b + c, np.float32(0)).sum(dtype=np.float32)).tobytes()
    return {"numpy_ms": 1e3 * by_hand, "graph_ms": 1e3 * as_graph, "ratio": as_graph / by_hand,
            "bit_identical": same}


def bench_cloud(repeats: int, tmp: Path) -> dict:
    data = scene.make_scene()
    tif = tmp / "scene.tif"
    scene.write_geotiff(tif, data)
    bands = dict(zip(scene.BANDS, data))
    graph = cloud.cloud_graph()
    inputs, outputs = tmp / "inputs", tmp / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    for name, band in bands.items():
        tensor_format.write_file(inputs / f"{name}.tensor", band)
    runtime = WasmRuntime()
    module = runtime.load(cloud.WAT_PATH)

    def run_wasm() -> None:
        outcome = runtime.run(module, inputs_dir=inputs, outputs_dir=outputs, args=[], env={},
                              fuel=10**10, memory_limit=256 << 20, log_dir=tmp, name="cloud_detect")
        assert outcome.exit_code == 0

    figures = {
        "scene_bytes": tif.stat().st_size,
        "numpy_ms": 1e3 * timed(lambda: cloud.detect_numpy(**bands), repeats),
        "graph_ms": 1e3 * timed(lambda: graph.run(bands), repeats),
        "wasm_ms": 1e3 * timed(run_wasm, repeats),
    }
    mask, fraction = cloud.detect_numpy(**bands)
    wasm_mask = tensor_format.read_file(outputs / "mask.tensor")
    figures["agree"] = bool(np.array_equal(wasm_mask, mask) and np.array_equal(graph.run(bands)["mask"], mask))
    figures["cloud_fraction"] = fraction
    for form, doc in (("graph", cloud.graph_job(str(tif), "out-graph")),
                      ("wasm", cloud.wasm_job(str(tif), "out-wasm"))):
        job = jobfile.parse(doc, base=tmp)
        start = time.perf_counter()
        result = jobfile.run_local(job)
        figures[f"job_{form}_s"] = time.perf_counter() - start
        figures[f"job_{form}_task_ms"] = 1e3 * result.wall_seconds
        assert result.ok, result.message
    figures["job_pngs_identical"] = (tmp / "out-graph" / "mask.png").read_bytes() == \
        (tmp / "out-wasm" / "mask.png").read_bytes()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000, help="tiny tasks per overhead measurement")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of the compute benchmarks")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        report = {"overhead": bench_overhead(args.tasks, tmp),
                  "graph_vs_numpy": bench_graph_vs_numpy(args.repeats),
                  "cloud": bench_cloud(args.repeats, tmp)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    o, g, c = report["overhead"], report["graph_vs_numpy"], report["cloud"]
    print(f"executor overhead, tiny task, warm worker ({args.tasks} tasks):")
    for name, f in o.items():
        print(f"  input {name:<9} median {f['median_ms']:.2f} ms  p99 {f['p99_ms']:.2f} ms  "
              f"(in worker {f['in_worker_median_ms']:.2f} ms)")
    print(f"2048x2048 float32 matmul->add->relu->reduce_sum: numpy {g['numpy_ms']:.1f} ms, "
          f"graph {g['graph_ms']:.1f} ms, ratio {g['ratio']:.3f}, bit-identical {g['bit_identical']}")
    print(f"cloud detection, {c['scene_bytes'] / 1e6:.1f} MB scene (cloud fraction {c['cloud_fraction']:.4f}):")
    print(f"  compute: numpy {c['numpy_ms']:.1f} ms, graph {c['graph_ms']:.1f} ms, "
          f"wasm {c['wasm_ms']:.1f} ms; masks agree: {c['agree']}")
    print(f"  whole job (run --local): graph {c['job_graph_s']:.2f} s (task {c['job_graph_task_ms']:.0f} ms), "
          f"wasm {c['job_wasm_s']:.2f} s (task {c['job_wasm_task_ms']:.0f} ms); "
          f"PNGs identical: {c['job_pngs_identical']}")


if __name__ == "__main__":
    main()
