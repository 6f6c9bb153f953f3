"""Static phone-readiness report of an exported graph: op types and counts, max tensor rank, ops outside the
target's fast path, delegate partitions, weights size, FLOPs per output frame.

This module holds what every target shares (the torch.export graph in ATen ops, the manifest's report keys,
sizes, FLOPs); each target module in ``turbo_vaed/targets/`` reads its own artifact in its own vocabulary.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the graph functions import torch themselves: targets read the limits below without it
    import torch

MAX_RANK = 4

# torch.export graph: ops the lowered graph must never contain (DESIGN.md "Lowering for phones").
FORBIDDEN_ATEN = ("conv3d", "upsample", "interpolate", "grid_sampler", "_upsample")

# Core ML MIL ops known to leave the Neural Engine (run on GPU/CPU, with a copy at each switch): indexing,
# control flow, sorting/sampling, recurrent layers, and interpolation (which the design forbids anyway).
ANE_UNFRIENDLY = frozenset({
    "gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd", "scatter_along_axis",
    "while_loop", "cond", "select", "topk", "argsort", "non_maximum_suppression", "non_zero", "cumsum",
    "random_normal", "random_uniform", "random_bernoulli", "random_categorical", "lstm", "gru", "rnn",
    "einsum", "band_part", "upsample_bilinear", "upsample_nearest_neighbor", "resize_bilinear",
    "resize_nearest_neighbor", "resize", "crop_resize",
})
ANE_MAX_DIM = 16384  # tensors with a larger axis fall back to GPU/CPU


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def finish_report(partial: dict, *, weights_bytes: int, gflops_per_frame: float | None) -> dict:
    """Fill the manifest's report keys around a target-specific ``partial`` report."""
    rep = {
        "op_counts": dict(sorted(partial.get("op_counts", {}).items(), key=lambda kv: (-kv[1], kv[0]))),
        "max_rank": int(partial.get("max_rank", 0)),
        "slow_path_ops": _dedupe(partial.get("slow_path_ops", [])),
        "partitions": partial.get("partitions"),
        "non_delegated_ops": dict(partial.get("non_delegated_ops", {})),
        "weights_bytes": int(weights_bytes),
        "gflops_per_frame": None if gflops_per_frame is None else round(float(gflops_per_frame), 4),
    }
    for k, v in partial.items():
        rep.setdefault(k, v)
    return rep


# ---------------------------------------------------------------- torch.export graphs


def op_name(target: object) -> str:
    """``conv2d``, ``slice.Tensor``, ``dim_order_ops._to_dim_order_copy`` for ATen/Edge op overloads."""
    import torch

    if isinstance(target, torch._ops.OpOverload):
        name = str(target)
    else:
        name = getattr(target, "__name__", None) or str(target)
    name = name.removeprefix("aten.")
    return name.removesuffix(".default")


def _val_shapes(node: torch.fx.Node) -> list[tuple]:
    import torch

    val = node.meta.get("val")
    vals = val if isinstance(val, list | tuple) else [val]
    return [tuple(v.shape) for v in vals if isinstance(v, torch.Tensor)]


def graph_report(graph: torch.fx.Graph) -> dict:
    """Op counts, max rank, dynamic dims and forbidden ops of a torch.export / edge graph."""
    import torch

    ops: Counter[str] = Counter()
    max_rank, slow = 0, []
    for n in graph.nodes:
        shapes = _val_shapes(n) if n.op in ("call_function", "placeholder", "output") else []
        for s in shapes:
            max_rank = max(max_rank, len(s))
            if any(not isinstance(d, int) for d in s):
                slow.append(f"dynamic shape at {n.name}")
        if n.op != "call_function":
            continue
        name = op_name(n.target)
        if name in ("getitem", "executorch_call_delegate"):
            continue
        ops[name] += 1
        if any(f in name for f in FORBIDDEN_ATEN):
            slow.append(name)
        if name.startswith(("conv", "convolution")):
            w = n.args[1] if len(n.args) > 1 else None
            if isinstance(w, torch.fx.Node) and any(len(s) == 5 for s in _val_shapes(w)):
                slow.append("conv3d")
    if max_rank > MAX_RANK:
        slow.append(f"rank-{max_rank} tensors")
    return {"op_counts": dict(ops), "max_rank": max_rank, "slow_path_ops": _dedupe(slow)}


def exported_program_report(ep: torch.export.ExportedProgram) -> dict:
    return graph_report(ep.graph)


# ---------------------------------------------------------------- sizes, FLOPs


def module_weights_bytes(module: torch.nn.Module, precision: str) -> int:
    """Bytes of parameters and buffers at ``precision`` (fp16: 2 bytes, fp32: 4)."""
    per = 2 if precision == "fp16" else 4
    n = sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())
    return n * per


def mobile_gflops_per_frame(mobile: torch.nn.Module, input_shape: tuple[int, ...], frames: int) -> float:
    """GFLOPs (2 x MACs) per output frame of the lowered graph (``frames`` frames out), counted on the meta device."""
    import torch

    from turbo_vaed.flops import count_flops

    meta = copy.deepcopy(mobile).to("meta")
    z = torch.zeros(*input_shape, device="meta")
    return count_flops(meta, z) / frames / 1e9
