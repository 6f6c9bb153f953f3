"""ONNX target: static shapes, opset >= 18 (torch.onnx dynamo exporter), plus the ORT-format file; ONNX Runtime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from turbo_vaed.targets.base import Converted, GraphIO, Runner, Target, as_examples

if TYPE_CHECKING:  # conversion only: the runner (ONNX Runtime + numpy) imports no torch
    import torch

# ---------------------------------------------------------------- static report


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

    from turbo_vaed.exporters.phone_report import MAX_RANK, _dedupe

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



# ---------------------------------------------------------------- conversion

MIN_OPSET = 18


def write_ort(onnx_path: Path, ort_path: Path, level: str = "basic") -> Path:
    """Convert to the ORT format (what ``onnxruntime.tools.convert_onnx_models_to_ort`` does for one model)."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    so.optimized_model_filepath = str(ort_path)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return ort_path


def convert(mobile: torch.nn.Module, example: torch.Tensor | tuple, tmp: Path, name: str, precision: str,
            preset: dict, io: GraphIO | None = None) -> Converted:
    """Lowered decoder -> ``tmp/<name>.onnx`` (+ ``<name>.ort``)."""
    import onnx
    import torch

    from turbo_vaed.exporters.graph import CastIO, export_graph, quiet
    from turbo_vaed.targets.onnx_optimize import optimize_model

    opset = int(preset.get("opset", MIN_OPSET))
    if opset < MIN_OPSET:
        raise ValueError(f"ONNX opset must be >= {MIN_OPSET}, preset says {opset}")
    io = io or GraphIO()
    examples = as_examples(example)
    module = CastIO(mobile, torch.float16) if precision == "fp16" else mobile
    ep = export_graph(module, examples)
    path = tmp / f"{name}.onnx"
    with quiet():
        prog = torch.onnx.export(ep, examples, dynamo=True, opset_version=opset, input_names=list(io.inputs),
                                 output_names=list(io.outputs), external_data=False, optimize=False, verbose=False)
        prog.model = optimize_model(prog.model)  # torch's optimize=True, minus one quadratic rewrite (see there)
        prog.save(str(path), external_data=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    extra_files = []
    if preset.get("ort_format", True):
        with quiet():
            extra_files.append(write_ort(path, tmp / f"{name}.ort", preset.get("ort_optimization", "basic")))
    report = onnx_report(path)
    return Converted(artifact=path, report=report, io_dtype="float32", extra_files=extra_files,
                     extra={"opset": opset, "ort_artifact": extra_files[0].name if extra_files else None})


# ---------------------------------------------------------------- runner

class OrtRunner(Runner):
    """ONNX Runtime, CPU execution provider (.onnx and .ort)."""

    name = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        self.version = ort.__version__
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        disabled = []
        if self.manifest.get("stream"):
            # streaming steps: the CPU arena stays on; memory patterns and memory reuse go off. ORT's memory reuse
            # keeps every buffer it plans to reuse alive to the end of the call (an mmap trace shows nothing freed
            # until the last node). Default student, 720p, chunks of 1, 1 thread, states bound in place: the plain
            # step 6.0-6.9 s/call at 6.26 GB with reuse, 6.0-6.6 s at 5.38 GB without; arena and patterns off:
            # 31.9 s/call (chunks of 2). README "Streaming" has the tables. The Android harness turns arena and
            # patterns off: a phone's budget before its speed.
            so.enable_mem_pattern = False
            so.enable_mem_reuse = False
        low = self.manifest.get("lowering") or {}
        if low.get("stream_bands", 1) > 1 or low.get("stream_tail_frames", 0):
            # a banded (or frame-grouped) step is memory before speed: the NCHWc layout (x86 only) goes off too, its
            # reordered copies of every conv input and output. 720p, chunks of 1, a process without torch (session
            # 9): the student's 8 bands 7.2-7.35 s/call at 1817 MiB without it, 6.97 s at 1877 MiB with it; the
            # full-size TAEHV one frame at a time 13.2 s at 2094 MiB without, 9.7 s at 2396 MiB with it (README
            # "Streaming"). Earlier: 16 bands 12.0-12.3 s at 1.77 GB; one frame at a time 7.72 s at 2.77 GB
            # without NCHWc, 7.93 s at 3.06 GB with it.
            disabled = ["NchwcTransformer"]
        self.session = ort.InferenceSession(str(self.artifact), so, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=disabled)
        self.input_name = self.session.get_inputs()[0].name
        self._input_names = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]
        # next-state output -> its state input (bound in place, see _run_in_place)
        self._state_of = {s["next"]: s["name"] for s in (self.manifest.get("stream") or {}).get("states", [])}

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def _run_all(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feeds = dict(zip(self._input_names, arrays, strict=True))
        if not self._state_of:
            return self.session.run(None, feeds)
        return self._run_in_place(feeds)

    def _run_in_place(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """A streaming step whose next states overwrite the state inputs' buffers (bound with IOBinding).

        Only one copy of the states is alive, not two: at 720p the default student's fp32 states are 0.78 GB. Safe
        because every node that reads a state input runs before the node that writes its next value: the next
        state is cut from a concatenation that holds the state's reads (its history, or for partial sums the outputs
        that read the old sums; ``tests/test_stream_bands.py`` checks the graph).
        """
        seen: set[int] = set()
        for name in self._state_of.values():  # a buffer of its own, writable, for every state (else a private copy)
            a = feeds[name]
            if not (a.flags.c_contiguous and a.flags.writeable and a.flags.owndata) or a.ctypes.data in seen:
                a = feeds[name] = a.copy()
            seen.add(a.ctypes.data)
        io = self.session.io_binding()
        for name, a in feeds.items():
            io.bind_cpu_input(name, a)
        for name in self._outputs:
            if name in self._state_of:
                a = feeds[self._state_of[name]]
                io.bind_output(name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)
            else:
                io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io)
        return [feeds[self._state_of[n]] if n in self._state_of else v.numpy()
                for n, v in zip(self._outputs, io.get_outputs(), strict=True)]


class OnnxTarget(Target):
    name = "onnx"
    title = "ONNX"
    runtime = "onnxruntime"
    suffixes = (".onnx", ".ort")
    description = "ONNX (+ ORT format) for ONNX Runtime (Mobile)"

    def convert(self, mobile, example, tmp, name, precision, preset, delegate, io=None) -> Converted:
        return convert(mobile, example, tmp, name, precision, preset, io)

    def check(self, path: Path, precision: str, recorded: dict) -> dict:
        if path.suffix != ".onnx":  # the .ort companion: its manifest's report
            return dict(recorded)
        return {**recorded, **onnx_report(path)}

    def toolchain(self) -> dict:
        import onnx
        import onnxruntime

        return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}

    def runner(self, artifact: Path, threads: int | None, compute_units: str = "all") -> Runner:
        return OrtRunner(artifact, threads)


TARGET = OnnxTarget()
