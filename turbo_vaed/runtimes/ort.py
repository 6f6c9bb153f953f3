"""ONNX Runtime (CPU execution provider) runner for .onnx and .ort artifacts."""

from __future__ import annotations

import numpy as np

from turbo_vaed.runtimes.base import Runner


class OrtRunner(Runner):
    name = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        self.version = ort.__version__
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.artifact), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
