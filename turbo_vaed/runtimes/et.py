"""ExecuTorch Python runtime (``executorch.runtime.Runtime``) runner for .pte artifacts."""

from __future__ import annotations

import platform

import numpy as np

from turbo_vaed.errors import UserError
from turbo_vaed.runtimes.base import Runner


class ExecuTorchRunner(Runner):
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
        self.method = Runtime.get().load_program(str(self.artifact)).load_method("forward")

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([self._torch.from_numpy(x)])[0]
        return out.float().numpy()
