"""Shared fixtures of the hardening suite (tests/test_hardening_*.py) and unit tests of turbo_vaed.guards.

Every CLI case runs in a fresh working folder (``work``) and goes through :func:`expect_error`: the exit code,
exactly one stderr line starting with ``error:``, no traceback, and no new file in the working folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import latents_for, small_student, small_teacher
from turbo_vaed.errors import UserError

SIDE = 32  # tiny clips and latents: 32x32 pixels, 4x4 wan latents


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (hidden ones too), relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def expect_error(res, *needles: str, code: int = 2) -> str:
    """The promise: exit ``code``, one ``error:`` line on stderr, no traceback. Returns the line."""
    assert res.code == code, (res.code, res.out, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error:"), res.err
    assert "Traceback" not in res.err + res.out and 'File "' not in res.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A fresh working folder (the cwd) for one test."""
    w = tmp_path / "work"
    w.mkdir()
    monkeypatch.chdir(w)
    return w


@pytest.fixture
def clean(cli, work):
    """``clean(*argv, needles..)``: run the CLI in ``work``; assert the one-line error and that no file appeared."""

    def _run(*argv, needles: tuple[str, ...] = (), code: int = 2) -> str:
        before = tree(work)
        res = cli(*argv)
        line = expect_error(res, *needles, code=code)
        new = tree(work) - before
        assert not new, f"left behind: {sorted(new)}"
        return line

    return _run


def save_tensor_file(path: Path, z: torch.Tensor, family: str = "wan") -> Path:
    from turbo_vaed.latents_io import save_latents

    return save_latents(path, z, family)


def sparse_latents(path: Path, shape: tuple[int, ...]) -> Path:
    """A safetensors latents file of ``shape`` whose data is a hole (no disk used): the header is real."""
    n = math.prod(shape) * 4
    header = json.dumps({"latents": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, n]},
                         "__metadata__": {"format": "turbovaed.latents/1", "family": "wan"}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        f.truncate(8 + len(header) + n)
    return path


def tiny_video(path: Path, frames: int = 5, side: int = SIDE, seed: int = 0) -> Path:
    from turbo_vaed.video_io import write_video

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, side, side, 3), dtype=np.uint8)
    clip = np.concatenate([np.roll(base, i, axis=2) for i in range(frames)])
    return write_video(path, clip, fps=24)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny wan inputs for the whole hardening suite: teacher folder, student checkpoints, latents, a clip."""
    from turbo_vaed.checkpoint import save_student

    d = tmp_path_factory.mktemp("hardening")
    small_teacher("wan").save_pretrained(str(d / "teacher"))
    student = small_student("wan")
    ckpt = save_student(student, d / "student.safetensors")
    nan_student = small_student("wan")
    with torch.no_grad():
        next(iter(nan_student.parameters())).view(-1)[3] = float("nan")
    nan_ckpt = save_student(nan_student, d / "nan_student.safetensors")
    lat = save_tensor_file(d / "z.safetensors", latents_for("wan", t=2, h=4, w=4))
    video = tiny_video(d / "clip.mp4", frames=9)
    return {"dir": d, "teacher": d / "teacher", "ckpt": ckpt, "nan_ckpt": nan_ckpt, "latents": lat,
            "video": video, "student": student}


@pytest.fixture(scope="session")
def results_doc(tiny):
    """A valid turbovaed.bench/1 document from a real (in-process, tiny) host bench."""
    import io

    from rich.console import Console

    from turbo_vaed.bench.host import bench_host
    from turbo_vaed.bench.options import BenchOptions

    opts = BenchOptions(family="wan", checkpoint=tiny["ckpt"], teacher=str(tiny["teacher"]), runtimes=("torch",),
                        res=f"{SIDE}x{SIDE}", latent_frames=2, warmup=0, iters=2, threads=1,
                        out_dir=tiny["dir"] / "bench", extra={"isolate": False, "console": Console(file=io.StringIO())})
    return bench_host(opts)


def fake_manifest(artifact: Path, student, target: str, shape=(1, 16, 4, 4), out_frames: int = 1) -> Path:
    """A valid turbovaed.manifest/2 next to ``artifact`` (whatever bytes it holds), for a tiny student."""
    from turbo_vaed.decoders import as_decoder
    from turbo_vaed.exporters.manifest import SCHEMA, manifest_path, now_iso

    t, c, h, w = shape
    report = {"op_counts": {}, "max_rank": 4, "slow_path_ops": [], "partitions": 1, "non_delegated_ops": {},
              "weights_bytes": 1, "gflops_per_frame": 0.1}
    doc = {"schema": SCHEMA, "name": artifact.stem, "artifact": artifact.name, "target": target,
           "delegate": "xnnpack" if target == "executorch" else None, "preset": f"{w * 8}x{h * 8}", "family": "wan",
           "width": w * 8, "height": h * 8, "latent_frames": t, "output_frames": out_frames, "precision": "fp32",
           "inputs": [{"name": "latents", "shape": [t, c, h, w], "dtype": "float32"}],
           "outputs": [{"name": "frames", "shape": [out_frames, 3, h * 8, w * 8], "dtype": "float32"}],
           "decoder": as_decoder(student).manifest_section(), "toolchain": {}, "report": report, "parity": None,
           "size_bytes": 1, "sha256": "0" * 64, "created": now_iso()}
    mp = manifest_path(artifact)
    mp.write_text(json.dumps(doc, indent=2))
    return mp


# ---------------------------------------------------------------------------------------------- guards: units


def test_check_number_refuses_nan_inf_and_range():
    from turbo_vaed.guards import check_number

    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(UserError):
            check_number(bad, "--lr", lo=0, lo_open=True)
    with pytest.raises(UserError, match="whole number"):
        check_number(1.5, "--batch", lo=1, integer=True)
    check_number(None, "--fps", lo=0)
    check_number(3, "--batch", lo=1, hi=3, integer=True)


def test_strict_json_parser():
    from turbo_vaed.guards import dumps_json, loads_json

    assert loads_json('{"a": [1, 2.5, "x"]}', "doc") == {"a": [1, 2.5, "x"]}
    for text, needle in (('{"a": NaN}', "NaN"), ('{"a": -Infinity}', "Infinity"), ('{"a": 1e400}', "overflows"),
                         ('{"a": ' + "9" * 400 + "}", "400-digit"), ("[" * 100000 + "]" * 100000, "nested"),
                         ("[" * 70 + "]" * 70, "nested"), ('{"a": 1', "not JSON"), (b"\xff\xfe", "UTF-8")):
        with pytest.raises(UserError, match=needle):
            loads_json(text, "doc")
    with pytest.raises(UserError, match="stats/0/p50"):
        dumps_json({"stats": [{"p50": float("nan")}]})


def test_write_json_refuses_nan_and_writes_nothing(tmp_path):
    from turbo_vaed.jsonio import write_json

    with pytest.raises(UserError, match="parity/max_abs_error"):
        write_json(tmp_path / "m.json", {"parity": {"max_abs_error": float("inf")}})
    assert list(tmp_path.iterdir()) == []


def test_finite_checks_name_the_tensor():
    from turbo_vaed.guards import check_finite, check_weights_finite

    z = torch.zeros(1, 2, 3)
    check_finite(z, "latents", "fix")
    z[0, 1, 2] = float("nan")
    with pytest.raises(UserError, match=r"1 NaN value\(s\) \(first at index \[0, 1, 2\]\)"):
        check_finite(z, "latents", "fix")
    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.bias[0] = float("inf")
    with pytest.raises(UserError, match="'bias'.*1 Inf"):
        check_weights_finite(m, "checkpoint x")


def test_memory_estimate_tiers(monkeypatch):
    """Lower bound refuses at once; a fitting upper bound passes without a probe; else the meta probe decides."""
    from turbo_vaed import guards
    from turbo_vaed.decoders import as_decoder

    dec = as_decoder(small_student("wan"))
    probes = []
    real = guards.meta_activations
    monkeypatch.setattr(guards, "meta_activations", lambda *a: probes.append(a) or real(*a))
    monkeypatch.setenv("TURBOVAED_AVAILABLE_MEMORY", str(64 * 2**30))
    assert guards.require_decode_memory(dec, (1, 16, 2, 4, 4)) is None and not probes
    with pytest.raises(UserError, match=r"needs about .* GiB of memory.*smaller --res"):
        guards.require_decode_memory(dec, (1, 16, 200, 512, 512))
    assert not probes  # refused on the input + output alone
    monkeypatch.setenv("TURBOVAED_AVAILABLE_MEMORY", str(40 * 2**20))
    need = None
    try:
        need = guards.require_decode_memory(dec, (1, 16, 3, 16, 16))
    except UserError as e:
        assert "largest activation" in str(e)
    assert probes  # the widest-layer bound did not fit: measured on the meta device
    if need is not None:
        assert need <= 40 * 2**20


def test_stale_temps_only_of_dead_processes(tmp_path):
    from turbo_vaed.guards import clean_stale_temps

    out = tmp_path / "video.mp4"
    dead = tmp_path / ".video.tmp999999999.mp4"
    live = tmp_path / f".video.tmp{os.getpid()}.mp4"
    other = tmp_path / ".other.tmp999999999.mp4"
    export_tmp = tmp_path / ".video.mp4.tmp999999999.ab_c1.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"x")
    export_tmp.mkdir()
    removed = clean_stale_temps(out)
    assert set(removed) == {dead, export_tmp}
    assert live.exists() and other.exists()


def test_safetensors_header_checks_offsets(tmp_path):
    from turbo_vaed.guards import safetensors_header

    p = sparse_latents(tmp_path / "z.safetensors", (1, 16, 2, 4, 4))
    assert safetensors_header(p, "latents", "fix")["latents"]["shape"] == [1, 16, 2, 4, 4]
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size - 4)
    with pytest.raises(UserError, match="truncated"):
        safetensors_header(p, "latents", "fix")


def test_native_stderr_swallows_fd2(capfd):
    from turbo_vaed.guards import native_stderr

    with native_stderr() as lines:
        os.write(2, b"[cpuinfo_utils.cpp:109] Failed to open midr file\n")
    assert lines == ["[cpuinfo_utils.cpp:109] Failed to open midr file"]
    assert "cpuinfo" not in capfd.readouterr().err
