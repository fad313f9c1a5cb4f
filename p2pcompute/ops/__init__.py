"""Operators, the tensor DSL, deterministic WebAssembly programs, the sandboxed executor.

Nothing is implemented here yet; issue 5 fills it.
"""
