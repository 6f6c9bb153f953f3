"""Core ML target: coremltools ML program (.mlpackage), fixed shapes, ``latents`` -> ``frames``.

Conversion and the static report (read from the saved MIL program) work on Linux; prediction needs macOS.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from turbo_vaed.errors import UserError
from turbo_vaed.exporters.phone_report import ANE_MAX_DIM, ANE_UNFRIENDLY, MAX_RANK, _dedupe
from turbo_vaed.targets.base import Converted, GraphIO, Runner, Target, as_examples

if TYPE_CHECKING:  # imported where used: the package's other runners load without torch
    import torch

# ---------------------------------------------------------------- static report


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



# ---------------------------------------------------------------- conversion

NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def deployment_target(name: str):
    import coremltools as ct

    try:
        return getattr(ct.target, name)
    except AttributeError:
        raise ValueError(f"unknown Core ML deployment target {name!r} (e.g. iOS18)") from None


def mil_max_rank(prog) -> int:
    """Largest tensor rank among the outputs of every op of a MIL program (nested blocks included)."""
    best = 0

    def visit(block) -> None:
        nonlocal best
        for op in block.operations:
            for v in op.outputs:
                shape = getattr(v, "shape", None)
                if shape is not None:
                    best = max(best, len(shape))
            for b in getattr(op, "blocks", []):
                visit(b)

    for fn in prog.functions.values():
        visit(fn)
    return best


def convert(mobile: torch.nn.Module, example: torch.Tensor | tuple, tmp: Path, name: str, precision: str,
            preset: dict, io: GraphIO | None = None) -> Converted:
    """Lowered decoder -> ``tmp/<name>.mlpackage``; asserts rank <= 4 on the converted MIL program."""
    import coremltools as ct

    from turbo_vaed.exporters.graph import export_graph, quiet

    io_dtype = preset.get("io_dtype", "float32")
    io = io or GraphIO()
    examples = as_examples(example)
    ep = export_graph(mobile, examples)
    with quiet():
        ml = ct.convert(
            ep,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=deployment_target(preset.get("deployment_target", "iOS18")),
            inputs=[ct.TensorType(name=n, shape=tuple(e.shape), dtype=NP_DTYPES[io_dtype])
                    for n, e in zip(io.inputs, examples, strict=True)],
            outputs=[ct.TensorType(name=n, dtype=NP_DTYPES[io_dtype]) for n in io.outputs],
        )
    rank = mil_max_rank(ml._mil_program)
    if rank > MAX_RANK:
        raise RuntimeError(f"Core ML program has rank-{rank} tensors (the Neural Engine wants <= {MAX_RANK})")
    ml.short_description = f"turbovaed decoder {name}: latents [T, C, h, w] -> frames [F, 3, H, W]"
    ml.user_defined_metadata["turbovaed.name"] = name
    path = tmp / f"{name}.mlpackage"
    with quiet():
        ml.save(str(path))
    report = coreml_report(ml.get_spec(), precision)
    report["mil_max_rank"] = rank
    report["weights_bytes"] = coreml_weights_bytes(path)
    return Converted(artifact=path, report=report, io_dtype=io_dtype,
                     extra={"deployment_target": preset.get("deployment_target", "iOS18"),
                            "compute_units": preset.get("compute_units", "all")})


def check_package(path: Path, precision: str) -> dict:
    """Re-read a saved .mlpackage's spec and report on it (works off macOS)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    rep = coreml_report(spec, precision)
    rep["weights_bytes"] = coreml_weights_bytes(path)
    return rep


# ---------------------------------------------------------------- runner

COMPUTE_UNITS = {"all": "ALL", "cpuAndNeuralEngine": "CPU_AND_NE", "cpuAndGPU": "CPU_AND_GPU", "cpuOnly": "CPU_ONLY"}


def check_macos() -> None:
    if platform.system() != "Darwin":
        raise UserError(f"Core ML prediction needs macOS (this is {platform.system()}): run `turbovaed parity` or "
                        "the bench on a Mac; the static report works here (`turbovaed export --check ARTIFACT`)")


def compute_unit(name: str):
    import coremltools as ct

    if name not in COMPUTE_UNITS:
        raise UserError(f"unknown compute units '{name}': use one of {', '.join(COMPUTE_UNITS)}")
    return getattr(ct.ComputeUnit, COMPUTE_UNITS[name])


class CoreMLRunner(Runner):
    """Core ML prediction (macOS only)."""

    name = "coreml"
    evaluator = "coreml"

    def __init__(self, artifact: Path, threads: int | None = None, compute_units: str = "all") -> None:
        compute_unit(compute_units)  # validate before loading anything
        check_macos()
        self.compute_units = compute_units
        super().__init__(artifact, threads)

    def _load(self) -> None:  # pragma: no cover - macOS only
        import coremltools as ct

        self.version = ct.__version__
        self.model = ct.models.MLModel(str(self.artifact), compute_units=compute_unit(self.compute_units))

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - macOS only
        return self.model.predict({"latents": x})["frames"]


class MilReferenceRunner(Runner):
    """Off macOS: the saved ML program evaluated op by op (:mod:`turbo_vaed.targets.coreml_mil`), in fp32 or in
    fp16 emulation (one rounding per op, as the Neural Engine computes) by the artifact's precision."""

    name = "coreml"
    evaluator = "mil-reference"

    def __init__(self, artifact: Path, threads: int | None = None, compute_units: str = "all") -> None:
        compute_unit(compute_units)  # validated, though only a Mac's prediction uses it
        super().__init__(artifact, threads)

    def _load(self) -> None:
        import coremltools as ct

        from turbo_vaed.targets.coreml_mil import load_program

        self.version = f"coremltools {ct.__version__} MIL reference evaluator"
        self.program = load_program(self.artifact)
        self.precision = self.manifest.get("precision", "fp32")

    def _run(self, x: np.ndarray) -> np.ndarray:
        from turbo_vaed.targets.coreml_mil import evaluate

        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        return evaluate(self.program, {"latents": x}, precision=self.precision)["frames"]

    def _run_all(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        from turbo_vaed.targets.coreml_mil import evaluate

        names = [s["name"] for s in self.manifest["inputs"]]
        out = evaluate(self.program, dict(zip(names, arrays, strict=True)), precision=self.precision)
        return [out[s["name"]] for s in self.manifest["outputs"]]


class CoreMLTarget(Target):
    name = "coreml"
    title = "Core ML"
    runtime = "coreml"
    suffixes = (".mlpackage",)
    description = "Core ML ML program (.mlpackage) for the iPhone's Neural Engine"

    def convert(self, mobile, example, tmp, name, precision, preset, delegate, io=None) -> Converted:
        return convert(mobile, example, tmp, name, precision, preset, io)

    def check(self, path: Path, precision: str, recorded: dict) -> dict:
        return {**recorded, **check_package(path, precision)}

    def toolchain(self) -> dict:
        import coremltools

        return {"coremltools": coremltools.__version__}

    def runner(self, artifact: Path, threads: int | None, compute_units: str = "all") -> Runner:
        """Core ML prediction on macOS; elsewhere the MIL reference evaluator (``evaluator: mil-reference``)."""
        if platform.system() == "Darwin":
            return CoreMLRunner(artifact, threads, compute_units)
        return MilReferenceRunner(artifact, threads, compute_units)


TARGET = CoreMLTarget()
