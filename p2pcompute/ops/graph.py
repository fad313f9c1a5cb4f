"""Operator graphs: structure checks, inference before execution, evaluation, (de)serialization.

A graph has named *inputs* (optionally declaring dtype and shape), *nodes*
listed in execution order (each node names one operator, the values it reads
and its attributes, and produces one value under its own name) and *outputs*
(names of values). Listing nodes in order makes every graph a DAG by
construction: a node may only read inputs and earlier nodes.

Checking happens in two stages, both before any kernel runs:

1. ``Graph(...)`` / ``from_dict`` check structure: opset, names, references,
   operator names, input counts and attribute types (untrusted data is fine).
2. ``infer(specs)`` propagates dtype and shape through every node once the
   input shapes are known; a mismatch raises ``UserError`` naming the node,
   the operator and the input dtypes and shapes.

``run(feeds)`` does stage 2 with the feeds' specs, then evaluates the numpy
kernels in order, dropping each intermediate after its last use, and checks
every result against its inferred spec.

Serialized form (``to_dict``), shared by CBOR and the ``ops:`` section of
job.yaml::

    opset: 1
    inputs: {nir: {dtype: uint16}, red: {dtype: uint16, shape: [1024, 1024]}}
    nodes:
      - {name: ndvi, op: normalized_difference, inputs: [nir, red]}
      - {name: t, op: const, value: 0.3, dtype: float32}
      - {name: green_veg, op: greater, inputs: [ndvi, t]}
    outputs: [green_veg]

Keys other than ``name``, ``op`` and ``inputs`` are the operator's attributes.
A ``const`` value is the canonical tensor bytes in CBOR and a (nested) list
with ``dtype`` and ``shape`` in YAML; either way at most ``INLINE_LIMIT``
bytes: bigger data is a graph input, which travels by CID.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import cbor2
import numpy as np
import yaml

from ..errors import P2PComputeError, UserError, WireError
from . import tensor_format
from .opset import DTYPE_NAMES, SUPPORTED_OPSETS, Spec, check_attrs, lookup, min_opset

MAX_NODES = 10_000
MAX_GRAPH_BYTES = 16 << 20
INLINE_LIMIT = 64 << 10
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
_NODE_KEYS = ("name", "op", "inputs")


@dataclass(frozen=True)
class InputDecl:
    """A graph input; dtype and shape are optional and then come from the data."""

    name: str
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True, eq=False)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)


class Graph:
    """A checked operator graph (see the module docstring)."""

    def __init__(self, inputs: Iterable[InputDecl], nodes: Iterable[Node], outputs: Iterable[str],
                 opset: int | None = None) -> None:
        self.inputs = list(inputs)
        self.nodes = list(nodes)
        self.outputs = list(outputs)
        # no opset named: the lowest one that has every operator (opset-1 graphs stay opset 1)
        self.opset = min_opset(n.op for n in self.nodes) if opset is None else opset
        self._params: list[dict[str, Any]] = []
        self._check_structure()

    # --- stage 1: structure ----------------------------------------------------

    def _check_structure(self) -> None:
        if self.opset not in SUPPORTED_OPSETS:
            raise UserError(f"graph needs opset {self.opset}; this peer supports {list(SUPPORTED_OPSETS)}")
        if len(self.nodes) + len(self.inputs) > MAX_NODES:
            raise UserError(f"graph has {len(self.nodes) + len(self.inputs)} values, at most {MAX_NODES}")
        defined: set[str] = set()
        for decl in self.inputs:
            _define(decl.name, defined, "input")
        for node in self.nodes:
            opdef = lookup(node.op, self.opset)
            where = f"node {node.name!r} ({node.op})"
            if not opdef.min_inputs <= len(node.inputs) <= opdef.max_inputs:
                want = (str(opdef.min_inputs) if opdef.min_inputs == opdef.max_inputs
                        else f"{opdef.min_inputs}..{opdef.max_inputs}")
                raise UserError(f"{where} takes {want} input(s), got {len(node.inputs)}")
            for ref in node.inputs:
                if ref not in defined:
                    raise UserError(f"{where} reads {ref!r}, which is not an input or an earlier "
                                    "node (nodes must be listed in execution order)")
            try:
                self._params.append(check_attrs(opdef, dict(node.attrs)))
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
            if node.op == "const" and node.attrs["value"].nbytes > INLINE_LIMIT:
                raise UserError(f"{where} holds {node.attrs['value'].nbytes} bytes; tensors over "
                                f"{INLINE_LIMIT} bytes must be graph inputs")
            _define(node.name, defined, "node")
        if not self.outputs:
            raise UserError("graph has no outputs")
        for out in self.outputs:
            if out not in defined:
                raise UserError(f"output {out!r} is not an input or node of the graph")
        if len(set(self.outputs)) != len(self.outputs):
            raise UserError(f"outputs {self.outputs} name a value twice")

    # --- stage 2: inference --------------------------------------------------------

    def infer(self, feed_specs: Mapping[str, Spec] | None = None) -> dict[str, Spec]:
        """Spec of every value, or ``UserError`` naming the first bad node."""
        feed_specs = feed_specs or {}
        specs: dict[str, Spec] = {}
        for decl in self.inputs:
            specs[decl.name] = _input_spec(decl, feed_specs.get(decl.name))
        for node, params in zip(self.nodes, self._params):
            args = [specs[ref] for ref in node.inputs]
            try:
                specs[node.name] = lookup(node.op).infer(args, params)
            except UserError as exc:
                shown = ", ".join(str(a) for a in args)
                raise UserError(f"node {node.name!r}: {node.op}({shown}): {exc}") from None
        return specs

    def portable(self, feed_specs: Mapping[str, Spec] | None = None) -> bool:
        """True if every node is bit-exact across machines (see opset.py)."""
        specs = self.infer(feed_specs)
        return all(lookup(n.op).portable([specs[r] for r in n.inputs]) for n in self.nodes)

    # --- evaluation ---------------------------------------------------------------------

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check everything, then evaluate; returns {output name: array}."""
        arrays = self._check_feeds(feeds)
        specs = self.infer({k: Spec.of(v) for k, v in arrays.items()})
        last_use = {name: i for i, node in enumerate(self.nodes) for name in node.inputs}
        keep = set(self.outputs)
        values: dict[str, np.ndarray] = dict(arrays)
        for i, (node, params) in enumerate(zip(self.nodes, self._params)):
            result = lookup(node.op).kernel([values[r] for r in node.inputs], params)
            if Spec.of(result) != specs[node.name]:
                raise P2PComputeError(f"internal: {node.op} kernel gave {Spec.of(result)}, "
                                      f"inference said {specs[node.name]}")
            values[node.name] = result
            for ref in set(node.inputs):
                if last_use[ref] == i and ref not in keep:
                    del values[ref]
        return {name: values[name] for name in self.outputs}

    def _check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        names = [d.name for d in self.inputs]
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise UserError(f"graph inputs are {names}; missing {missing}, unknown {unknown}")
        out = {}
        for name in names:
            array = np.asarray(feeds[name])
            if array.dtype.name not in DTYPE_NAMES:
                raise UserError(f"input {name!r} has unsupported dtype {array.dtype}")
            out[name] = array.astype(array.dtype.newbyteorder("="), copy=False)
        return out

    # --- serialization ----------------------------------------------------------------------

    def to_dict(self, *, binary: bool) -> dict[str, Any]:
        """Plain data; ``binary`` puts const values as tensor bytes (CBOR), else lists (YAML)."""
        inputs = {}
        for d in self.inputs:
            entry: dict[str, Any] = {}
            if d.dtype is not None:
                entry["dtype"] = d.dtype.name
            if d.shape is not None:
                entry["shape"] = list(d.shape)
            inputs[d.name] = entry
        return {"opset": self.opset, "inputs": inputs,
                "nodes": [_node_to_dict(n, binary) for n in self.nodes], "outputs": list(self.outputs)}

    @classmethod
    def from_dict(cls, data: Any) -> "Graph":
        return _graph_from_dict(data)

    def to_cbor(self) -> bytes:
        return cbor2.dumps(self.to_dict(binary=True), canonical=True)

    @classmethod
    def from_cbor(cls, data: bytes) -> "Graph":
        if len(data) > MAX_GRAPH_BYTES:
            raise UserError(f"graph of {len(data)} bytes exceeds the {MAX_GRAPH_BYTES}-byte limit")
        try:
            decoded = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types on garbage
            raise UserError(f"graph: malformed CBOR ({exc})") from None
        return _graph_from_dict(decoded)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(binary=False), sort_keys=False, default_flow_style=None)

    def digest(self) -> str:
        """sha256 of the canonical CBOR: equal graphs have equal digests."""
        return hashlib.sha256(self.to_cbor()).hexdigest()


def _define(name: Any, defined: set[str], what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"{what} name {name!r:.60} is not valid (letters, digits, _ . -; "
                        "starts with a letter or _; at most 128 characters)")
    if name in defined:
        raise UserError(f"{what} name {name!r} is used twice")
    defined.add(name)


def _input_spec(decl: InputDecl, fed: Spec | None) -> Spec:
    if fed is None:
        if decl.dtype is None or decl.shape is None:
            raise UserError(f"input {decl.name!r} has no data and no declared dtype and shape")
        return Spec(decl.dtype, decl.shape)
    if (decl.dtype is not None and decl.dtype != fed.dtype) or \
            (decl.shape is not None and decl.shape != fed.shape):
        declared = Spec(decl.dtype or fed.dtype, decl.shape if decl.shape is not None else fed.shape)
        raise UserError(f"input {decl.name!r} is declared {declared} but the data is {fed}")
    return fed


def _node_to_dict(node: Node, binary: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": node.name, "op": node.op}
    if node.inputs:
        out["inputs"] = list(node.inputs)
    for key, value in node.attrs.items():
        if isinstance(value, np.ndarray):
            if binary:
                out[key] = tensor_format.encode(value)
            else:
                out.update({key: value.tolist(), "dtype": value.dtype.name, "shape": list(value.shape)})
        elif isinstance(value, np.dtype):
            out[key] = value.name
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _graph_from_dict(data: Any) -> Graph:
    if not isinstance(data, dict):
        raise UserError("graph must be a mapping with opset, inputs, nodes and outputs")
    unknown = sorted(set(map(str, data)) - {"opset", "inputs", "nodes", "outputs"})
    if unknown:
        raise UserError(f"graph has unknown key(s) {unknown}; expected opset, inputs, nodes, outputs")
    opset = data.get("opset")
    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool)):
        raise UserError(f"graph opset must be an integer, got {opset!r:.40}")
    raw_inputs = data.get("inputs") or {}
    if not isinstance(raw_inputs, dict):
        raise UserError("graph inputs must be a mapping of name -> {dtype, shape}")
    raw_nodes = data.get("nodes") or []
    if not isinstance(raw_nodes, list) or len(raw_nodes) > MAX_NODES:
        raise UserError(f"graph nodes must be a list of at most {MAX_NODES} entries")
    outputs = data.get("outputs")
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise UserError("graph outputs must be a list of value names")
    inputs = [_input_from(name, spec) for name, spec in raw_inputs.items()]
    nodes = [_node_from(i, raw) for i, raw in enumerate(raw_nodes)]
    return Graph(inputs, nodes, outputs, opset)


def _input_from(name: Any, spec: Any) -> InputDecl:
    spec = spec or {}
    if not isinstance(spec, dict) or set(spec) - {"dtype", "shape"}:
        raise UserError(f"input {name!r:.60} must be a mapping with optional dtype and shape")
    dtype = spec.get("dtype")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise UserError(f"input {name!r}: dtype {dtype!r:.40} is not one of {', '.join(DTYPE_NAMES)}")
    shape = spec.get("shape")
    if shape is not None:
        shape = _shape(shape, f"input {name!r}")
    return InputDecl(str(name), np.dtype(dtype) if dtype else None, shape)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**48 for d in value):
        raise UserError(f"{where}: shape must be a list of at most 32 non-negative integers")
    return tuple(value)


def _node_from(index: int, raw: Any) -> Node:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("op"), str):
        raise UserError(f"node #{index} must be a mapping with a name and an op")
    inputs = raw.get("inputs", [])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(r, str) for r in inputs):
        raise UserError(f"node {raw['name']!r}: inputs must be a list of value names")
    attrs = {k: v for k, v in raw.items() if k not in _NODE_KEYS}
    if raw["op"] == "const":
        attrs = {"value": _const_value(raw["name"], attrs)}
    return Node(raw["name"], raw["op"], tuple(inputs), attrs)


def _const_value(name: str, attrs: dict[str, Any]) -> np.ndarray:
    value = attrs.get("value")
    if isinstance(value, bytes):
        if set(attrs) != {"value"}:
            raise UserError(f"const {name!r}: a binary value takes no other keys")
        if len(value) > INLINE_LIMIT + 300:
            raise UserError(f"const {name!r} holds {len(value)} bytes; the limit is {INLINE_LIMIT}")
        try:
            return tensor_format.decode(value, max_bytes=INLINE_LIMIT)
        except WireError as exc:
            raise UserError(f"const {name!r}: {exc}") from None
    extra = sorted(set(attrs) - {"value", "dtype", "shape"})
    dtype = attrs.get("dtype")
    if extra or dtype not in DTYPE_NAMES or value is None:
        raise UserError(f"const {name!r} needs value and dtype (one of {', '.join(DTYPE_NAMES)}), "
                        f"optionally shape{'; unknown keys ' + str(extra) if extra else ''}")
    try:
        plain = np.array(value)
        if plain.size * np.dtype(dtype).itemsize > INLINE_LIMIT:
            raise UserError(f"const {name!r} is larger than {INLINE_LIMIT} bytes; make it an input")
        if plain.dtype.kind not in "biuf":
            raise ValueError("values must be numbers")
        if np.dtype(dtype).kind in "biu" and plain.dtype.kind == "f":
            raise ValueError(f"non-integer values for {dtype}")
        array = np.array(value, dtype=dtype)
        if "shape" in attrs:
            array = array.reshape(_shape(attrs["shape"], f"const {name!r}"))
    except (ValueError, TypeError, OverflowError) as exc:
        raise UserError(f"const {name!r}: value does not fit {dtype}: {exc}") from None
    return array
