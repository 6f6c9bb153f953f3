"""CLI: info, encode/decode round trip, and one-line exit-2 errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import pytest
import torch

from tests.conftest import latents_for
from turbo_vaed.latents_io import save_latents
from turbo_vaed.video_io import shipped_clip


def _one_line_error(res, *needles: str) -> None:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error:"), res.err
    assert "Traceback" not in res.err + res.out
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_info_json(cli, tmp_path):
    res = cli("info", "--family", "wan", "--json", tmp_path / "info.json")
    assert res.code == 0, res.err
    data = json.loads((tmp_path / "info.json").read_text())
    row = data["families"][0]
    assert row["family"] == "wan" and row["ratio"] <= row["budget"]
    assert set(row["student_gflops_per_frame"]) == {"256p", "480p", "720p"}


def test_decode_writes_readable_mp4(cli, tmp_path):
    z = latents_for("wan", t=3, h=4, w=6)
    lat = save_latents(tmp_path / "z.safetensors", z, "wan")
    out = tmp_path / "out.mp4"
    res = cli("decode", lat, "-o", out)
    assert res.code == 0, res.err
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 1 + 4 * 2
    assert frames[0].shape == (32, 48, 3)


def test_encode_then_teacher_decode(cli, tmp_path):
    lat, out = tmp_path / "z.safetensors", tmp_path / "t.mp4"
    res = cli("encode", shipped_clip("carphone_pristine"), "-o", lat, "--frames", "5")
    assert res.code == 0, res.err
    res = cli("decode", lat, "-o", out, "--decoder", "teacher")
    assert res.code == 0, res.err
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (144, 176, 3)


@pytest.mark.parametrize(
    "make, needles",
    [
        (lambda p: save_latents(p / "z.safetensors", torch.randn(16, 3, 4, 4), "wan"), ["rank 5"]),
        (lambda p: save_latents(p / "z.safetensors", torch.randn(1, 8, 3, 4, 4), "wan"), ["8 channels", "16"]),
        (lambda p: save_latents(p / "z.safetensors", torch.randn(1, 16, 2, 1024, 4), "wan"), ["4096"]),
        (lambda p: p / "missing.safetensors", ["not found"]),
        (lambda p: (p / "bad.safetensors").write_bytes(b"\x00garbage" * 10) and p / "bad.safetensors", ["corrupt"]),
    ],
)
def test_decode_bad_latents(cli, tmp_path, make, needles):
    src = make(tmp_path)
    out = tmp_path / "out.mp4"
    _one_line_error(cli("decode", src, "-o", out), *needles)
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_decode_corrupt_checkpoint(cli, tmp_path):
    lat = save_latents(tmp_path / "z.safetensors", latents_for("wan"), "wan")
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(b"not a checkpoint")
    out = tmp_path / "o.mp4"
    _one_line_error(cli("decode", lat, "-o", out, "--checkpoint", ck), "corrupt")
    _one_line_error(cli("decode", lat, "-o", out, "--checkpoint", tmp_path / "nope.safetensors"), "not found")
    assert not out.exists()


def test_unknown_family_and_unreadable_video(cli, tmp_path):
    _one_line_error(cli("info", "--family", "sora"), "unknown family 'sora'")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    out = tmp_path / "z.safetensors"
    _one_line_error(cli("encode", bad, "-o", out), "cannot read video")
    _one_line_error(cli("encode", tmp_path / "none.mp4", "-o", out), "not found")
    assert not out.exists()


def test_console_script_exit_code_and_one_line():
    proc = subprocess.run([sys.executable, "-m", "turbo_vaed", "info", "--family", "sora"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    expected = "error: unknown family 'sora': choose one of hunyuan, cogvideox, ltx, wan, ltx2, dcae"
    assert proc.stderr.strip().splitlines() == [expected]
