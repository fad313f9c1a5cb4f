"""Operators, the tensor DSL, deterministic WebAssembly programs, the sandboxed executor.

Files:
    opset.py           Operator API: registry, Spec, attribute checks, opset versions, reproducibility
    op_elementwise.py  arithmetic, math, comparisons, logic, where, clip, cast, normalized_difference
    op_reduce.py       matmul, softmax, reduce_sum/mean/max/min
    op_shape.py        const, transpose, reshape, slice, concat
    op_train.py        opset 2: softmax_cross_entropy (+ _grad), relu_grad, argmax for training
    graph.py           Graph: structure checks, inference before execution, run, CBOR/YAML forms
    dsl.py             lazy Tensor DSL (re-exported as ``p2pcompute.tensor``)
    tensor_format.py   self-describing tensor bytes (magic, dtype, byte order, shape, data)
    tasks.py           Task, Limits, InputFile, TaskResult: what the executor runs and reports
    executor_state.py  pure state machine: queue, workers, deadlines, limits verdicts, retries
    executor.py        trio driver: warm worker processes, scratch dirs, outputs, ``open_executor``
    worker.py          the worker process (``python -m p2pcompute.ops.worker``) and its pipe framing
    sandbox.py         in-worker confinement: network namespace, rlimits per task
    taskrun.py         one task inside a worker: limits, inputs, graph or program, outputs
    wasm.py            wasmtime runtime: WASI contract, fuel, memory cap, no clock/random/network
    loaders.py         input files (.tensor, .npy, .tif bands) to arrays; outputs to files
    png.py             8-bit grayscale PNG writer/reader (zlib + struct)
    scene.py           deterministic synthetic 5-band 16-bit GeoTIFF (clouds, land, water)
    cloud.py           cloud detection as a graph and numpy; job documents for both forms
    cloud_detect.wat   cloud detection as a WebAssembly program (WAT source)
    jobfile.py         job.yaml schema for local runs: checks, Task building, ``run_local``
    service.py         the daemon's compute service: ``POST /v1/compute`` on its executor, data by CID
    remote.py          the client half: ``tensor.compute(client)``, large tensors as CIDs
"""
