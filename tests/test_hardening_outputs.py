"""Class 6: output paths are checked before the work starts (a folder or file in the way, a folder that cannot be
written, a file where a parent folder should be), and temp files of killed runs of the same output are removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_hardening_common import clean, fake_manifest, tiny, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


@pytest.fixture
def readonly(work):
    """A folder this process cannot create files in (as root, chmod does not stop writes: use /proc)."""
    if os.geteuid() == 0:
        yield Path("/proc/self")
        return
    d = work / "ro"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


@pytest.fixture
def in_the_way(work):
    (work / "adir.mp4").mkdir()
    (work / "adir.json").mkdir()
    (work / "adir.safetensors").mkdir()
    (work / "afile").write_text("x")
    (work / "existing").mkdir()
    return work


CASES = [
    (("decode", "{latents}", "-o", "adir.mp4"), "is a folder"),
    (("decode", "{latents}", "-o", "afile/v.mp4"), "is a file, not a folder"),
    (("decode", "{latents}", "-o", "{ro}/v.mp4"), "not writable"),
    (("decode", "{latents}", "-o", "v.avi"), ".mp4"),
    (("encode", "{video}", "-o", "adir.safetensors", "--teacher", "{teacher}"), "is a folder"),
    (("encode", "{video}", "-o", "z.npy", "--teacher", "{teacher}"), ".safetensors"),
    (("encode", "{video}", "-o", "{ro}/z.safetensors", "--teacher", "{teacher}"), "not writable"),
    (("export", "--target", "onnx", "--checkpoint", "{ckpt}", "-o", "afile"), "is a file"),
    (("export", "--target", "onnx", "--checkpoint", "{ckpt}", "-o", "afile/arts"), "is a file, not a folder"),
    (("export", "--target", "onnx", "--checkpoint", "{ckpt}", "-o", "{ro}/arts"), "not writable"),
    (("eval", "--checkpoint", "{ckpt}", "--teacher", "{teacher}", "--json", "adir.json"), "is a folder"),
    (("eval", "--checkpoint", "{ckpt}", "--teacher", "{teacher}", "--json", "{ro}/e.json"), "not writable"),
    (("demo", "-o", "afile", "--no-export", "--no-bench"), "is a file"),
    (("demo", "-o", "{ro}/demo", "--no-export", "--no-bench"), "not writable"),
    (("distill", "--teacher", "{teacher}", "--videos", "{video}", "-o", "afile"), "is a file"),
    (("distill", "--teacher", "{teacher}", "--videos", "{video}", "-o", "{ro}/run"), "not writable"),
    (("cache-latents", "--videos", "{video}", "--teacher", "{teacher}", "-o", "existing"), "already exists"),
    (("cache-latents", "--videos", "{video}", "--teacher", "{teacher}", "-o", "afile/c"), "is a file"),
    (("bench", "--family", "wan", "--checkpoint", "{ckpt}", "--teacher", "{teacher}", "--runtime", "torch",
      "--json", "adir.json"), "is a folder"),
    (("bench", "--family", "wan", "--checkpoint", "{ckpt}", "--teacher", "{teacher}", "--runtime", "torch",
      "--out", "afile"), "is a file"),
    (("i3d-convert", "{video}", "-o", "adir.safetensors"), "is a folder"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[f"{a[0]}-{n}" for a, n in CASES])
def test_bad_output_paths(clean, tiny, in_the_way, readonly, argv, needle):
    fmt = {**{k: str(v) for k, v in tiny.items()}, "ro": str(readonly)}
    clean(*[a.format(**fmt) for a in argv], needles=(needle,))


def test_parity_manifest_not_writable(clean, tiny, work):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)
    mp = fake_manifest(art, tiny["student"], "onnx")
    mp.chmod(0o444)
    clean("parity", art, needles=("read-only",))


def test_missing_parent_is_created_and_stale_temps_removed(cli, tiny, work):
    out = work / "new" / "deeper" / "v.mp4"
    res = cli("decode", tiny["latents"], "-o", out, "--checkpoint", tiny["ckpt"])
    assert res.code == 0, res.err
    assert out.is_file()
    dead = out.with_name(".v.tmp999999999.mp4")  # a killed run's temp file (no such process)
    dead.write_bytes(b"half a video")
    res = cli("decode", tiny["latents"], "-o", out, "--checkpoint", tiny["ckpt"])
    assert res.code == 0 and not dead.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.mp4"]


def test_killed_export_temp_folder_is_removed(cli, tiny, work, monkeypatch):
    """SIGKILL mid-export leaves .NAME.tmpPID.XXXX.tmp; the next export of that artifact removes it."""
    from turbo_vaed.targets import get_target

    arts = work / "arts"
    name = "wan-onnx-64x64-fp32-t1"
    stale = arts / f".{name}.tmp999999999.ab12_x.tmp"
    (stale / "half").mkdir(parents=True)

    def boom(*a, **k):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(type(get_target("onnx")), "convert", boom)
    res = cli("export", "--target", "onnx", "--res", "64x64", "--latent-frames", "1", "--checkpoint", tiny["ckpt"],
              "-o", arts, "--name", name)
    assert res.code == 2 and "converter exploded" in res.err and len(res.err.strip().splitlines()) == 1
    assert list(arts.iterdir()) == []  # the stale folder and this run's temp folder are both gone
