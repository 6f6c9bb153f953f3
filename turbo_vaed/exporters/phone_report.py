"""Static phone-readiness report of an exported graph: op types and counts, max tensor rank, ops outside the
target's fast path, delegate partitions, weights size, FLOPs per output frame.

Each target is read in its own vocabulary: the torch.export graph (ATen ops), the Core ML MIL program
(read from the saved spec, so ``--check`` works on any .mlpackage), the ExecuTorch program (from the lowered
edge program at export time, from the .pte flatbuffer on ``--check``), the ONNX graph (with ONNX Runtime's
own tables of what the NNAPI and Core ML execution providers take).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

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
    if isinstance(target, torch._ops.OpOverload):
        name = str(target)
    else:
        name = getattr(target, "__name__", None) or str(target)
    name = name.removeprefix("aten.")
    return name.removesuffix(".default")


def _val_shapes(node: torch.fx.Node) -> list[tuple]:
    val = node.meta.get("val")
    vals = val if isinstance(val, list | tuple) else [val]
    return [tuple(v.shape) for v in vals if isinstance(v, torch.Tensor)]


def graph_report(graph: torch.fx.Graph) -> dict:
    """Op counts, max rank, dynamic dims and forbidden ops of a torch.export / edge graph."""
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


# ---------------------------------------------------------------- Core ML


def _mil_blocks(spec) -> Iterable:
    for fn in spec.mlProgram.functions.values():
        yield from fn.block_specializations.values()


def _mil_ops(block) -> Iterable:
    for op in block.operations:
        yield op
        for sub in op.blocks:
            yield from _mil_ops(sub)


def coreml_report(spec, precision: str) -> dict:
    """Report of a Core ML ML program spec (``MLModel.get_spec()`` or ``coremltools.utils.load_spec(path)``)."""
    from coremltools.proto import MIL_pb2

    ops: Counter[str] = Counter()
    max_rank, slow = 0, []
    float_types = {MIL_pb2.DataType.Value(n) for n in ("FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16")}
    for blk in _mil_blocks(spec):
        for op in _mil_ops(blk):
            if op.type != "const":
                ops[op.type] += 1
            for out in op.outputs:
                if not out.type.HasField("tensorType"):
                    continue
                tt = out.type.tensorType
                max_rank = max(max_rank, tt.rank)
                if op.type == "const":
                    continue
                if any(not d.HasField("constant") for d in tt.dimensions):
                    slow.append(f"dynamic shape ({op.type})")
                dims = [d.constant.size for d in tt.dimensions if d.HasField("constant")]
                if tt.rank > MAX_RANK:
                    slow.append(f"rank-{tt.rank} tensor ({op.type})")
                if op.type in ("conv", "conv_transpose") and tt.rank == 5:
                    slow.append("conv3d")
                if dims and max(dims) > ANE_MAX_DIM:
                    slow.append(f"axis > {ANE_MAX_DIM} ({op.type})")
                if tt.dataType not in float_types and op.type not in ("shape",):
                    slow.append(f"{MIL_pb2.DataType.Name(tt.dataType).lower()} compute ({op.type})")
            if op.type in ANE_UNFRIENDLY:
                slow.append(op.type)
    if precision != "fp16":
        slow.append("fp32 compute (the Neural Engine runs fp16 only: GPU/CPU)")
    return {"op_counts": dict(ops), "max_rank": max_rank, "slow_path_ops": _dedupe(slow), "partitions": 1,
            "non_delegated_ops": {}, "spec_version": int(spec.specificationVersion)}


def coreml_weights_bytes(package: Path) -> int:
    return sum(p.stat().st_size for p in Path(package).rglob("weight*.bin"))


# ---------------------------------------------------------------- ExecuTorch


def executorch_report(edge_ep: torch.export.ExportedProgram) -> dict:
    """Report of a lowered edge program: ops inside delegates, partitions, ops left to the portable kernels."""
    gm = edge_ep.graph_module
    outer = graph_report(gm.graph)
    inner_ops: Counter[str] = Counter()
    max_rank = outer["max_rank"]
    slow = list(outer["slow_path_ops"])
    backends: Counter[str] = Counter()
    for _, mod in gm.named_children():
        if not hasattr(mod, "original_module"):
            continue
        backends[str(getattr(mod, "backend_id", "?"))] += 1
        rep = graph_report(mod.original_module.graph)
        inner_ops.update(rep["op_counts"])
        max_rank = max(max_rank, rep["max_rank"])
        slow += rep["slow_path_ops"]
    non_delegated = dict(outer["op_counts"])
    if non_delegated:
        slow += [f"{op} (not delegated)" for op in non_delegated]
    ops = Counter(inner_ops)
    ops.update(non_delegated)
    partitions = sum(backends.values())
    return {"op_counts": dict(ops), "max_rank": max_rank, "slow_path_ops": _dedupe(slow), "partitions": partitions,
            "non_delegated_ops": non_delegated, "backends": dict(backends)}


def pte_report(path: Path) -> dict:
    """What a .pte says about itself: delegate calls per backend, ops left to kernels, constant bytes."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(Path(path).read_bytes())
    plan = pte.program.execution_plan[0]
    backends: Counter[str] = Counter(d.id for d in plan.delegates)
    non_delegated: Counter[str] = Counter()
    calls = 0
    for chain in plan.chains:
        for ins in chain.instructions:
            kind = type(ins.instr_args).__name__
            if kind == "KernelCall":
                op = plan.operators[ins.instr_args.op_index]
                non_delegated[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
            elif kind == "DelegateCall":
                calls += 1
    const = sum(len(b.storage) for b in pte.program.constant_buffer)
    named = sum(len(b) for b in getattr(pte.named_data, "buffers", None) or [] if isinstance(b, bytes | bytearray))
    slow = [f"{op} (not delegated)" for op in non_delegated]
    return {"partitions": calls, "backends": dict(backends), "non_delegated_ops": dict(non_delegated),
            "slow_path_ops": slow, "constant_bytes": const + named}


# ---------------------------------------------------------------- ONNX


def _ort_tables() -> dict[str, Path]:
    import onnxruntime

    base = Path(onnxruntime.__file__).parent / "tools" / "mobile_helpers"
    return {"NNAPI EP": base / "nnapi_supported_ops.md", "CoreML EP": base / "coreml_supported_mlprogram_ops.md"}


def _supported_ops(table: Path) -> set[str]:
    ops = set()
    for line in table.read_text().splitlines():
        if line.startswith("|ai.onnx:"):
            ops.add(line.split("|")[1].split(":", 1)[1])
    return ops


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _const_value(model, name: str):
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(_attr(n, "value"))
    return None


def onnx_report(path: Path) -> dict:
    """Report of an ONNX model, with the partitions the NNAPI / Core ML execution providers would make."""
    import onnx
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    ops = Counter(n.op_type for n in g.node)
    ranks: dict[str, int] = {}
    slow: list[str] = []
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        ranks[vi.name] = len(tt.shape.dim)
        if any(not d.HasField("dim_value") for d in tt.shape.dim):
            slow.append(f"dynamic shape ({vi.name})")
    max_rank = max(ranks.values(), default=0)
    if max_rank > MAX_RANK:
        slow.append(f"rank-{max_rank} tensors (NNAPI EP takes rank <= 4)")
    for n in g.node:
        if n.op_type == "Conv":
            w = next((i for i in g.initializer if i.name == n.input[1]), None)
            if w is not None and len(w.dims) != 4:
                slow.append(f"Conv {len(w.dims) - 2}D (EPs take 2D Conv only)")
        elif n.op_type == "DepthToSpace" and (_attr(n, "mode", b"DCR") or b"DCR") in (b"CRD", "CRD"):
            slow.append("DepthToSpace CRD (NNAPI EP: DCR only)")
        elif n.op_type == "Clip":
            lo = _const_value(model, n.input[1]) if len(n.input) > 1 and n.input[1] else None
            hi = _const_value(model, n.input[2]) if len(n.input) > 2 and n.input[2] else None
            pair = (None if lo is None else float(lo), None if hi is None else float(hi))
            if pair not in ((0.0, 6.0), (-1.0, 1.0)):
                slow.append(f"Clip{pair} (NNAPI EP: relu1/relu6 clips only)")
    partitions: dict[str, int] = {}
    for ep, table in _ort_tables().items():
        if not table.is_file():
            continue
        supported = _supported_ops(table)
        slow += [f"{op} ({ep}: not supported)" for op in sorted(set(ops) - supported)]
        checker = uc._SupportedOpsChecker(table)
        info = uc.check_partitioning(g, checker, require_fixed_input_sizes=True,
                                     max_rank=4 if ep == "NNAPI EP" else 5)
        partitions[ep] = int(info.num_partitions)
    weights = sum(_initializer_bytes(i) for i in g.initializer)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return {"op_counts": dict(ops), "max_rank": max_rank, "slow_path_ops": _dedupe(slow),
            "partitions": partitions.get("NNAPI EP"), "ep_partitions": partitions, "non_delegated_ops": {},
            "weights_bytes": weights, "opset": opset}


def _initializer_bytes(init) -> int:
    import numpy as np
    import onnx

    n = int(np.prod(init.dims)) if init.dims else 1
    return n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize


# ---------------------------------------------------------------- sizes, FLOPs


def module_weights_bytes(module: torch.nn.Module, precision: str) -> int:
    """Bytes of parameters and buffers at ``precision`` (fp16: 2 bytes, fp32: 4)."""
    per = 2 if precision == "fp16" else 4
    n = sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())
    return n * per


def mobile_gflops_per_frame(mobile: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """GFLOPs (2 x MACs) per output frame of the lowered graph, counted on the meta device."""
    from turbo_vaed.flops import count_flops

    meta = copy.deepcopy(mobile).to("meta")
    z = torch.zeros(*input_shape, device="meta")
    frames = mobile.family.frames_out(int(input_shape[0]))
    return count_flops(meta, z) / frames / 1e9
