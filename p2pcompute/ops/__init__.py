"""Operators, the tensor DSL, deterministic WebAssembly programs, the sandboxed executor.

Files:
    opset.py           Operator API v1: registry, Spec, attribute checks, reproducibility notes
    op_elementwise.py  arithmetic, math, comparisons, logic, where, clip, cast, normalized_difference
    op_reduce.py       matmul, softmax, reduce_sum/mean/max/min
    op_shape.py        const, transpose, reshape, slice, concat
    graph.py           Graph: structure checks, inference before execution, run, CBOR/YAML forms
    dsl.py             lazy Tensor DSL (re-exported as ``p2pcompute.tensor``)
    tensor_format.py   self-describing tensor bytes (magic, dtype, byte order, shape, data)
"""
