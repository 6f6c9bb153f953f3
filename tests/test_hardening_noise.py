"""Class 9: one line is one line: third-party import chatter (diffusers' torchao notice, ExecuTorch's cpuinfo
lines) is silenced at its source, and a child process's traceback is never packed into the error line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import latents_for
from tests.test_hardening_common import save_tensor_file, tiny, work

FIXTURES = (tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


def test_console_script_after_diffusers_import_is_one_line(tiny, work):
    """A real process (the console entry point), which imports diffusers to load the teacher, then fails."""
    z = latents_for("wan", 2, 4, 4)
    z[0, 0, 0, 0, 0] = float("nan")
    src = save_tensor_file(work / "z.safetensors", z)
    proc = subprocess.run([sys.executable, "-m", "turbo_vaed", "decode", str(src), "-o", "v.mp4", "--decoder",
                           "teacher", "--teacher", str(tiny["teacher"])], capture_output=True, text=True,
                          cwd=work, timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "torchao" not in proc.stderr + proc.stdout and "NaN" in lines[0]
    assert sorted(p.name for p in work.iterdir()) == ["z.safetensors"]


def test_child_traceback_is_not_packed_into_the_line(tiny):
    from turbo_vaed.bench.measure import BenchError, Job, run_job

    z = np.zeros((1, 3, 2, 4, 4), np.float32)  # 3 channels: the student's first conv wants 16
    with pytest.raises(BenchError) as e:
        run_job(Job("student/torch", "torch", "wan", str(tiny["ckpt"]), z, 0, 1, 1), isolate=True)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg and 'File "' not in msg and "RuntimeError" in msg


@pytest.mark.parametrize("code, needle", [(-9, "out of memory"), (-6, "SIGABRT"), (-11, "SIGSEGV"), (1, "crashed")])
def test_dead_child_is_explained(code, needle):
    from turbo_vaed.bench.measure import _death

    assert needle in _death(code)


def test_quiet_third_party_sets_the_sources():
    import os

    from turbo_vaed.console import quiet_third_party

    quiet_third_party()
    assert os.environ["DIFFUSERS_VERBOSITY"] == "error"
    assert torch is not None
