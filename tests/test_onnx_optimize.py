"""The ONNX exports' graph optimiser: onnxscript's default pipeline without its quadratic SlicesSplit rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from tests.conftest import small_student
from turbo_vaed.exporters import export_artifact
from turbo_vaed.targets import onnx_optimize


def test_only_the_quadratic_rule_is_skipped():
    from onnxscript import rewriter

    names = [getattr(r, "name", None) for r in rewriter._DEFAULT_REWRITE_RULES]
    kept = onnx_optimize._rules()
    assert "SlicesSplit" in names, "onnxscript renamed the rule: update SKIPPED_RULES"
    assert len(kept) == len(names) - 1 and all(getattr(r, "name", None) != "SlicesSplit" for r in kept)


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_banded_step_graph_equals_torchs_optimised_graph(tmp_path, monkeypatch):
    """A banded streaming step (mostly Slices and Concats): the same ops, the same numbers as optimize=True."""
    import onnxruntime as ort
    from onnxscript._framework_apis.torch_2_8 import optimize as stock_optimize

    student = small_student("wan")
    ours = export_artifact(student, "onnx", "48x64", latent_frames=1, precision="fp32", out_dir=tmp_path / "ours",
                           stream=True, bands=3).artifact
    monkeypatch.setattr(onnx_optimize, "optimize_model", stock_optimize)  # convert imports it when it runs
    stock = export_artifact(student, "onnx", "48x64", latent_frames=1, precision="fp32", out_dir=tmp_path / "stock",
                            stream=True, bands=3).artifact
    assert _ops(ours) == _ops(stock)
    so = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (ours, stock)]
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in so[0].get_inputs()}
    feeds["first"] = feeds["trim"] = np.ones((1, 1, 1, 1), np.float32)
    for a, b in zip(so[0].run(None, feeds), so[1].run(None, feeds), strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6
