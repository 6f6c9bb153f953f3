"""Peak live bytes of a forward pass, from its traced graph on the meta device (no memory used).

The module is traced to ATen ops (``make_fx``) on meta tensors; walking the graph in the program's order, every
op's output is a new buffer (as in an ONNX graph: Slice, Transpose and Expand copy) except reshapes, in-place
results and the items of a multi-output op, which share their input's buffer; a buffer is freed after its last
reader. The peak is what a runtime that runs the ops in that order and frees each buffer after its last reader
holds at once, beside the inputs and weights. An app's budget check, not a measurement: runtimes add arenas,
workspaces and layout copies.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import fx

# ops a graph runtime runs without a copy (ONNX Reshape/Squeeze/Unsqueeze alias their input)
FREE_VIEWS = frozenset(("view", "_unsafe_view", "reshape", "alias", "squeeze", "unsqueeze", "flatten", "detach",
                        "_reshape_alias", "lift_fresh_copy"))


@dataclass(frozen=True)
class Liveness:
    """Bytes of intermediate buffers alive at the peak (outputs included), and the op where it is reached."""

    peak: int
    peak_op: str


def _bytes(node: fx.Node) -> int:
    val = node.meta.get("val")
    vals = val if isinstance(val, tuple | list) else (val,)
    return sum(v.numel() * v.element_size() for v in vals if isinstance(v, torch.Tensor))


def _shares_input(node: fx.Node) -> bool:
    if node.op != "call_function" or not hasattr(node.target, "_schema"):
        return False
    schema = node.target._schema
    name = schema.name.split("::")[-1]
    return schema.is_mutable or name in FREE_VIEWS


def graph_liveness(graph: fx.Graph) -> Liveness:
    """Walk ``graph`` in order: the peak of the live intermediate bytes (see the module docstring)."""
    nodes = list(graph.nodes)
    root: dict[fx.Node, fx.Node] = {}
    for n in nodes:  # the buffer each node's value lives in: its own, or its first argument's
        src = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        shares = n.op == "call_function" and (n.target is operator.getitem or _shares_input(n))
        root[n] = root[src] if src is not None and shares else n
    last: dict[fx.Node, int] = {}
    for i, n in enumerate(nodes):
        for a in n.all_input_nodes:
            last[root[a]] = i
        if n.op == "output":
            for a in n.all_input_nodes:
                last[root[a]] = len(nodes)  # returned: alive to the end
    live = peak = 0
    peak_op = ""
    for i, n in enumerate(nodes):
        if n.op == "call_function" and root[n] is n:
            live += _bytes(n)
            if live > peak:
                peak, peak_op = live, str(n.target)
            if n not in last:  # nothing reads it: freed at once
                live -= _bytes(n)
        for a in {root[x] for x in n.all_input_nodes}:
            if a.op == "call_function" and last.get(a) == i:
                live -= _bytes(a)
    return Liveness(peak, peak_op)


def peak_live_bytes(fn: Callable[..., object], inputs: Sequence[torch.Tensor]) -> Liveness:
    """Trace ``fn(*inputs)`` (meta tensors) to ATen ops and measure its peak live bytes (:func:`graph_liveness`);
    the inputs and the weights ``fn`` closes over are not counted."""
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        gm = make_fx(fn)(*inputs)
    gm.graph.eliminate_dead_code()  # as the exporters do: ops no output needs are never run
    return graph_liveness(gm.graph)
