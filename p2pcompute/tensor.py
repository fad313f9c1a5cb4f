"""The tensor DSL, re-exported for ``from p2pcompute import tensor as t`` (see ops/dsl.py)."""

from .ops.dsl import (  # noqa: F401
    Tensor,
    compute,
    concat,
    const,
    from_numpy,
    input,
    lift,
    normalized_difference,
    to_graph,
    where,
)
from .ops.graph import Graph  # noqa: F401
