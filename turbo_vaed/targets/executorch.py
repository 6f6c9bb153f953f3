"""ExecuTorch target: .pte with the XNNPACK delegate (Android CPU) or the Core ML delegate (iOS)."""

from __future__ import annotations

import copy
import platform
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from turbo_vaed.errors import UserError
from turbo_vaed.exporters.phone_report import _dedupe, graph_report
from turbo_vaed.targets.base import Converted, GraphIO, Runner, Target, as_examples

if TYPE_CHECKING:  # imported where used: the package's other runners load without torch
    import torch

# ---------------------------------------------------------------- static report


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



# ---------------------------------------------------------------- conversion

def partitioner(delegate: str, precision: str, preset: dict):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from turbo_vaed.targets.coreml import deployment_target

    specs = CoreMLBackend.generate_compile_specs(
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=deployment_target(preset.get("deployment_target", "iOS18")),
    )
    return CoreMLPartitioner(compile_specs=specs)


def convert(mobile: torch.nn.Module, example: torch.Tensor | tuple, tmp: Path, name: str, precision: str,
            preset: dict, delegate: str, io: GraphIO | None = None) -> Converted:
    """Lowered decoder -> ``tmp/<name>.pte``; the report lists partitions and ops left to portable kernels."""
    from executorch.exir import to_edge_transform_and_lower

    from turbo_vaed.exporters.graph import export_graph, quiet

    module, io_dtype, examples = mobile, "float32", as_examples(example)
    if delegate == "xnnpack" and precision == "fp16":
        # an fp16 graph with fp16 I/O: XNNPACK does not take boundary casts, which would run as portable kernels
        module, io_dtype = copy.deepcopy(mobile).half(), "float16"
        examples = tuple(e.half() for e in examples)
    ep = export_graph(module, examples)
    with quiet():
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner(delegate, precision, preset)])
        report = executorch_report(edge.exported_program())
        prog = edge.to_executorch()
    path = tmp / f"{name}.pte"
    with open(path, "wb") as f:
        prog.write_to_file(f)
    report["weights_bytes"] = pte_report(path)["constant_bytes"]  # what the file holds
    if delegate == "xnnpack" and precision == "fp16":
        report["notes"] = ["XNNPACK stores conv weights as fp32 in the .pte (converted to fp16 at load): "
                           "the file is not smaller than fp32, run-time memory and compute are fp16"]
    return Converted(artifact=path, report=report, io_dtype=io_dtype,
                     extra={"deployment_target": preset.get("deployment_target")} if delegate == "coreml" else {})


# ---------------------------------------------------------------- runner

class ExecuTorchRunner(Runner):
    """The ExecuTorch Python runtime (XNNPACK delegate here; the Core ML delegate needs macOS)."""

    name = "executorch"

    def _load(self) -> None:
        from importlib.metadata import version

        import torch
        from executorch.runtime import Runtime

        self.version = version("executorch")
        if self.manifest.get("delegate") == "coreml" and platform.system() != "Darwin":
            raise UserError(f"{self.artifact.name} uses the ExecuTorch Core ML delegate, which needs macOS/iOS: "
                            "run it there, or export with --delegate xnnpack")
        if self.threads:
            from executorch.extension.pybindings import portable_lib

            if portable_lib._threadpool_get_thread_count() != int(self.threads):
                portable_lib._unsafe_reset_threadpool(int(self.threads))
        self._torch = torch
        from turbo_vaed.guards import native_stderr

        with native_stderr():  # the runtime's [cpuinfo_utils.cpp:...] lines
            self.method = Runtime.get().load_program(str(self.artifact)).load_method("forward")

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([self._torch.from_numpy(x)])[0]
        return out.float().numpy()

    def _run_all(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.method.execute([self._torch.from_numpy(a) for a in arrays])
        return [o.float().numpy() for o in outs]


class EmbeddedCoreMLRunner(Runner):
    """Off macOS, a ``--delegate coreml`` .pte: its embedded ML program is extracted and evaluated op by op by
    the MIL reference evaluator (:mod:`turbo_vaed.targets.coreml_mil`), fp16 emulated for fp16 exports."""

    name = "executorch"
    evaluator = "mil-reference (embedded Core ML program)"

    def _load(self) -> None:
        import tempfile
        from importlib.metadata import version

        from turbo_vaed.targets.coreml_mil import delegate_io_names, extract_coreml_from_pte, load_program

        self.version = version("executorch")
        self._tmp = tempfile.TemporaryDirectory(prefix=".turbovaed-pte-")
        package = extract_coreml_from_pte(self.artifact, self._tmp.name)
        self.in_names, self.out_names = delegate_io_names(package)
        self.program = load_program(package)
        self.precision = self.manifest.get("precision", "fp32")

    def _run(self, x: np.ndarray) -> np.ndarray:
        from turbo_vaed.targets.coreml_mil import evaluate

        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        out = evaluate(self.program, {self.in_names[0]: x}, precision=self.precision)
        return np.asarray(out[self.out_names[0]], dtype=np.float32)


class ExecuTorchTarget(Target):
    name = "executorch"
    title = "ExecuTorch"
    runtime = "executorch"
    suffixes = (".pte",)
    delegates = ("xnnpack", "coreml")
    description = "ExecuTorch program (.pte): XNNPACK (Android CPU) or Core ML (iOS) delegate"

    def convert(self, mobile, example, tmp, name, precision, preset, delegate, io=None) -> Converted:
        return convert(mobile, example, tmp, name, precision, preset, delegate or "xnnpack", io)

    def check(self, path: Path, precision: str, recorded: dict) -> dict:
        fresh = pte_report(path)
        if not recorded:  # no manifest: what the .pte itself holds
            fresh["weights_bytes"] = fresh["constant_bytes"]
        fresh["slow_path_ops"] = list(dict.fromkeys(fresh["slow_path_ops"] + [
            s for s in recorded.get("slow_path_ops", []) if "not delegated" not in s]))
        return {**recorded, **fresh}

    def toolchain(self) -> dict:
        from importlib.metadata import version

        import coremltools

        return {"executorch": version("executorch"), "coremltools": coremltools.__version__}

    def runner(self, artifact: Path, threads: int | None, compute_units: str = "all") -> Runner:
        """The ExecuTorch runtime; off macOS a Core ML-delegate .pte is checked through its embedded program."""
        from turbo_vaed.exporters.manifest import read_manifest

        if read_manifest(artifact).get("delegate") == "coreml" and platform.system() != "Darwin":
            return EmbeddedCoreMLRunner(artifact, threads)
        return ExecuTorchRunner(artifact, threads)


TARGET = ExecuTorchTarget()
