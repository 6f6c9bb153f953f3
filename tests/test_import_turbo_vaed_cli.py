"""Released Turbo-VAED decoders through the real CLI: import, export to every target, parity, decode, bench.

All four fixtures (``shared/fixtures/decoders/turbo_vaed/{Hunyuan,Cog,LTX,DC}``: official tiny configs with random
weights in the release layout) go ``import turbo-vaed`` -> ``export`` -> ``parity``. Small sizes keep it cheap
(48x32 pixels for the x8 families, 96x64 for the x32 ones, 2 latent frames). Only the Hunyuan ONNX export runs in
the quick set; the others (ExecuTorch: about a minute of CPU each for these graphs) are marked slow and run in CI.
Cog's decoder is Hunyuan's (same config), so the ExecuTorch Core ML delegate and Core ML checks, which look at the
graph, run on the three distinct graphs (Hunyuan, LTX, DC); the numbers (ONNX Runtime, XNNPACK) on all four.

fp16 (Core ML, ExecuTorch Core ML delegate): >= 45 dB PSNR against the fp32 reference (off macOS through the MIL
reference evaluator, fp16 emulated).

fp32 parity: ONNX Runtime and ExecuTorch within 1e-4 of the PyTorch reference. The tiny LTX and DC configs end
their patch-4 head with an RMS norm over 2 channels (4 at full size), which amplifies fp32 rounding where both
channels are small: there the fp32 PyTorch reference is itself up to ~1e-4 from the exact (float64) decode, so the
artifact is held to the exact decode instead (as tests/test_arch_turbo_vaed.py does for the lowered graph): at
every output element it is within 1e-4 of the float64 decode plus twice the fp32 reference's own error there.
``parity`` (1e-3 gate) must pass for every artifact; the measured figures are printed (``-s``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import small_teacher
from turbo_vaed.cli import run

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "decoders" / "turbo_vaed"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"Turbo-VAED fixtures not found at {FIXTURES}")

RELEASES = {"Hunyuan": "hunyuan", "Cog": "cogvideox", "LTX": "ltx", "DC": "dcae"}
RES = {"Hunyuan": "48x32", "Cog": "48x32", "LTX": "96x64", "DC": "96x64"}  # W x H: 4x6 / 2x3 latents
T = 2
FRAMES = {"Hunyuan": 5, "Cog": 5, "LTX": 9, "DC": 8}  # 4T-3 (also for Cog's even T), 8T-7, 4T
FP32_ATOL = 1e-4
FP16_MIN_PSNR = 45.0
DISTINCT = ("Hunyuan", "LTX", "DC")  # Cog's decoder is Hunyuan's (same config; checked in test_arch_turbo_vaed)


def _one_line_error(res, *needles: str) -> str:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.err
    assert "Traceback" not in res.err + res.out
    flat = " ".join(lines[0].split())
    for n in needles:
        assert n in flat, (n, flat)
    return flat


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("turbo_vaed_cli")


def _folder(work: Path, release: str) -> Path:
    """The decoder folder ``turbovaed import`` writes for ``release`` (imported once per module)."""
    out = work / "decoders" / release
    if not (out / "decoder.json").is_file():
        code = run(["import", "turbo-vaed", "--config", str(FIXTURES / release / "tiny.config.json"),
                    "--weights", str(FIXTURES / release / "tiny.pth"), "-o", str(out)])
        assert code == 0
    return out


def _export(cli, work: Path, release: str, target: str, *extra: str, name: str) -> tuple[Path, dict]:
    """``turbovaed export`` of the imported ``release`` (small size, 2 latent frames): (artifact, manifest)."""
    folder = _folder(work, release)
    out = work / "artifacts"
    res = cli("export", "--checkpoint", folder, "--target", target, "--res", RES[release], "--latent-frames", str(T),
              *extra, "--name", name, "-o", out)
    assert res.code == 0, (res.out, res.err)
    art = next(p for p in out.iterdir() if p.name.startswith(name + ".") and not p.name.endswith(".json")
               and p.suffix != ".ort")
    m = json.loads((out / f"{name}.manifest.json").read_text())
    w, h = (int(v) for v in RES[release].split("x"))
    f = 8 if release in ("Hunyuan", "Cog") else 32
    assert m["family"] == RELEASES[release] and m["decoder"]["arch"] == "turbo-vaed"
    assert m["decoder"]["latent_convention"] == "raw" and m["decoder"]["checkpoint"] == str(folder)
    assert m["inputs"][0]["shape"] == [T, 16 if f == 8 else 128, h // f, w // f]
    assert m["outputs"][0]["shape"] == [FRAMES[release], 3, h, w]
    assert m["report"]["max_rank"] <= 4
    assert not any("conv3d" in k.lower() for k in m["report"]["op_counts"])
    return art, m


def _parity(cli, art: Path) -> dict:
    res = cli("parity", art)
    assert res.code == 0, (res.out, res.err)
    rec = json.loads(art.with_name(art.name.split(".")[0] + ".manifest.json").read_text())["parity"]
    assert rec["passed"] and rec["reference"].startswith("PyTorch turbo-vaed")
    return rec


def _float64_argument(work: Path, release: str, art: Path) -> tuple[float, float, float]:
    """(artifact vs fp32 reference, artifact vs float64 decode, fp32 reference vs float64 decode), max abs, on the
    latents ``parity`` uses; asserts the element-wise bound of the module docstring."""
    from turbo_vaed.decoders.store import load_decoder
    from turbo_vaed.lowering import from_mobile_layout
    from turbo_vaed.parity import parity_latents
    from turbo_vaed.targets import load_runner

    runner = load_runner(art, 2)
    z, _ = parity_latents(tuple(runner.manifest["inputs"][0]["shape"]), None, seed=0)
    out = runner.run(z[0].transpose(0, 1).contiguous().numpy())
    got = from_mobile_layout(torch.from_numpy(np.asarray(out, dtype=np.float32))).double()
    dec = load_decoder(_folder(work, release))
    with torch.no_grad():
        ref32 = dec(z).double()
        ref64 = copy.deepcopy(dec.module).double()(z.double())
    e32, e64, eref = (got - ref32).abs(), (got - ref64).abs(), (ref32 - ref64).abs()
    assert bool((e64 <= FP32_ATOL + 2 * eref).all()), (release, art.name, e64.max().item(), eref.max().item())
    return e32.max().item(), e64.max().item(), eref.max().item()


def _check_fp32(cli, work: Path, release: str, art: Path) -> None:
    rec = _parity(cli, art)
    if release in ("Hunyuan", "Cog"):
        assert rec["max_abs_error"] <= FP32_ATOL, (release, art.name, rec["max_abs_error"])
        print(f"\n{art.name}: parity max abs error {rec['max_abs_error']:.3g} (<= {FP32_ATOL})")
    else:
        e32, e64, eref = _float64_argument(work, release, art)
        assert abs(e32 - rec["max_abs_error"]) <= 1e-7
        print(f"\n{art.name}: vs fp32 reference {e32:.3g}, vs float64 decode {e64:.3g}; fp32 reference vs float64 "
              f"{eref:.3g}")


# ---------------------------------------------------------------------------------------------- import


@pytest.mark.parametrize("release", list(RELEASES))
def test_import_says_what_it_ignored(release, cli, work):
    out = work / "import-check" / release
    src = FIXTURES / release / "tiny.pth"
    res = cli("import", "turbo-vaed", "--config", FIXTURES / release / "tiny.config.json", "--weights", src, "-o", out)
    assert res.code == 0, res.err
    text = _flat(res.out)
    raw = torch.load(src, map_location="cpu", weights_only=True)
    heads = [k for k in raw if k.startswith("aligned_feature_projection_heads.")]
    assert heads
    assert (f"ignored (known extras, not part of the decoder): aligned_feature_projection_heads.* ({len(heads)} "
            "tensors), latents_mean, latents_std") in text
    assert f"imported turbo-vaed for family {RELEASES[release]}" in text and "raw latents" in text
    assert sorted(p.name for p in out.iterdir()) == ["decoder.json", "weights.safetensors"]
    doc = json.loads((out / "decoder.json").read_text())
    prov = doc["provenance"]
    assert doc["arch"] == "turbo-vaed" and doc["config"]["turbovaed"] == {"family": RELEASES[release]}
    assert prov["source"] == "tiny.pth" and prov["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert prov["config"] == "tiny.config.json"
    assert prov["ignored"] == [f"aligned_feature_projection_heads.* ({len(heads)} tensors)", "latents_mean",
                               "latents_std"]
    from safetensors.torch import load_file

    saved = load_file(str(out / "weights.safetensors"))
    want = {k: v for k, v in raw.items() if k not in ("latents_mean", "latents_std") and k not in heads}
    assert saved.keys() == want.keys() and all(torch.equal(saved[k], v) for k, v in want.items())


def test_info_lists_the_official_students(cli, tmp_path):
    """`info`: the released Turbo-VAED students (full-size configs) beside the teachers and the project's students;
    dcae says it has no teacher; the tables fit 80 columns without cut cells."""
    res = cli("info", "--json", tmp_path / "info.json")
    assert res.code == 0, res.err
    # the tables fit; the closing "wrote PATH" line is never cut, whatever the path's length (tmp paths vary)
    table = [ln for ln in res.out.splitlines() if not ln.startswith("wrote ")]
    assert "…" not in res.out and max(len(ln) for ln in table) <= 80
    assert f"wrote {tmp_path / 'info.json'}" in res.out
    assert "none in diffusers" in res.out and "dcae has no teacher" in _flat(res.out)
    doc = json.loads((tmp_path / "info.json").read_text())
    rows = {r["family"]: r for r in doc["released"] if r["arch"] == "turbo-vaed"}
    params = {"hunyuan": 40_687_811, "cogvideox": 40_687_811, "ltx": 41_896_023, "dcae": 45_831_383}
    assert {f: r["params"] for f, r in rows.items()} == params
    students = {r["family"]: r for r in doc["families"]}
    for fam, r in rows.items():
        g = r["gflops_per_frame"]
        assert 0 < g["256p"] < g["480p"] < g["720p"], r
        assert r["latent_convention"] == "raw"
        if fam == "dcae":
            assert r["teacher_decoder_params"] is None and r["ratio"] is None and "none" in r["teacher"]
        else:
            assert r["teacher_decoder_params"] == students[fam]["teacher_decoder_params"]
            assert r["ratio"] == pytest.approx(r["params"] / r["teacher_decoder_params"])
    assert rows["cogvideox"]["frames_for_3_latent_frames"] == 9 and rows["dcae"]["frames_for_3_latent_frames"] == 12
    one = cli("info", "--family", "dcae", "--json", tmp_path / "dcae.json")
    assert one.code == 0, one.err
    d = json.loads((tmp_path / "dcae.json").read_text())
    assert d["families"] == [] and [r["family"] for r in d["released"]] == ["dcae"]


# ---------------------------------------------------------------------------------------------- strict refusals


class _Payload:
    """Unpickling this would create the marker file: it must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _bad_weights(tmp_path: Path, how: str) -> tuple[Path, Path, str]:
    """(weights, config, expected words) of a refused import."""
    flat = torch.load(FIXTURES / "Hunyuan" / "tiny.pth", map_location="cpu", weights_only=True)
    cfg = FIXTURES / "Hunyuan" / "tiny.config.json"
    if how == "missing":
        state, needle = {k: v for k, v in flat.items() if k != "conv_out.conv.bias"}, "1 missing (conv_out.conv.bias)"
    elif how == "unknown":
        state, needle = {**flat, "up_blocks.9.resnets.0.conv1.conv.weight": torch.zeros(1)}, "1 unexpected (up_blocks.9"
    elif how == "shape":
        state = {**flat, "conv_in.conv.weight": torch.zeros(24, 16, 3, 3, 1)}
        needle = "wrong shape (conv_in.conv.weight"
    elif how == "config":
        state, cfg, needle = flat, FIXTURES / "LTX" / "tiny.config.json", "does not fit this turbo-vaed config"
    else:  # a pickle that would run code
        state, needle = {**flat, "conv_in.conv.weight": _Payload(tmp_path / "marker")}, "was not loaded"
    p = tmp_path / "weights" / f"{how}.pth"
    p.parent.mkdir(exist_ok=True)
    torch.save(state, p)
    return p, cfg, needle


@pytest.mark.parametrize("how", ["missing", "unknown", "shape", "config", "pickle"])
def test_strict_refusals_exit_2_and_leave_nothing(how, cli, tmp_path):
    weights, cfg, needle = _bad_weights(tmp_path, how)
    out = tmp_path / "out" / "decoder"
    out.parent.mkdir()
    res = cli("import", "turbo-vaed", "--config", cfg, "--weights", weights, "-o", out)
    _one_line_error(res, needle)
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------------------------------------- decode


def _save_latents(path: Path, z: torch.Tensor, family: str, convention: str | None) -> Path:
    from safetensors.torch import save_file

    meta = {"format": "turbovaed.latents/1", "family": family, "fps": "8"}
    if convention:
        meta["convention"] = convention
    save_file({"latents": z.contiguous()}, str(path), metadata=meta)
    return path


def _frames(mp4: Path) -> np.ndarray:
    import av

    with av.open(str(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_decode_raw_and_normalised_latents(cli, work, tmp_path):
    """Normalised latents are de-normalised with the teacher for the raw-latent decoder (same video as decoding the
    de-normalised latents as raw ones); dcae has no teacher, so its latents pass through, with a note."""
    from safetensors.torch import load_file

    from turbo_vaed.teachers import denormalize_latents

    folder = _folder(work, "Hunyuan")
    teacher = tmp_path / "teacher"
    vae = small_teacher("hunyuan")
    vae.save_pretrained(str(teacher))
    z = load_file(str(FIXTURES / "Hunyuan" / "io.safetensors"))["latents"]  # (1, 16, 3, 4, 6)
    norm = _save_latents(tmp_path / "norm.safetensors", z, "hunyuan", None)
    raw = _save_latents(tmp_path / "raw.safetensors", denormalize_latents(vae, z), "hunyuan", "raw")
    as_raw = _save_latents(tmp_path / "as_raw.safetensors", z, "hunyuan", "raw")
    videos = {}
    for name, lat in (("norm", norm), ("raw", raw), ("as_raw", as_raw)):
        res = cli("decode", lat, "--checkpoint", folder, "--teacher", teacher, "-o", tmp_path / f"{name}.mp4")
        assert res.code == 0, res.err
        videos[name] = _frames(tmp_path / f"{name}.mp4").astype(np.int16)
        assert videos[name].shape == (9, 32, 48, 3)  # 4T-3 frames of 48x32
    assert np.abs(videos["norm"] - videos["raw"]).max() <= 1
    assert np.abs(videos["norm"] - videos["as_raw"]).mean() > 1.0  # the conversion happened
    # dcae: no teacher to de-normalise with -> passed through as they are, and said so
    dz = load_file(str(FIXTURES / "DC" / "io.safetensors"))["latents"][:, :, :2]
    res = cli("decode", _save_latents(tmp_path / "dc.safetensors", dz, "dcae", None), "--checkpoint",
              _folder(work, "DC"), "-o", tmp_path / "dc.mp4")
    assert res.code == 0, res.err
    assert "note: family dcae has no teacher VAE in diffusers 0.42" in _flat(res.out)
    assert "as they are" in _flat(res.out)
    assert _frames(tmp_path / "dc.mp4").shape == (8, 64, 96, 3)  # 4T, no trim


# ---------------------------------------------------------------------------------------------- bench


def test_bench_imported_decoder_vs_teacher(cli, work, tmp_path):
    """An imported decoder benchmarks like the project's student; Cog's even T: 4T-3 frames vs the teacher's 4T."""
    from turbo_vaed.bench.schema import load_results

    teacher = tmp_path / "teacher"
    small_teacher("cogvideox").save_pretrained(str(teacher))
    out = tmp_path / "bench.json"
    res = cli("bench", "--checkpoint", _folder(work, "Cog"), "--vs-teacher", "--runtime", "torch", "--teacher",
              teacher, "--res", "48x32", "--latent-frames", str(T), "--warmup", "0", "--iters", "1", "--threads", "1",
              "--out", tmp_path / "out", "--json", out)
    assert res.code == 0, res.err
    doc = load_results(out)
    student, tch = doc["results"]
    assert (student["label"], tch["label"]) == ("student/torch", "teacher/diffusers")
    assert student["model"]["family"] == "cogvideox" and student["model"]["output_frames"] == FRAMES["Cog"]
    assert tch["model"]["output_frames"] == 4 * T  # the CogVideoX teacher keeps every frame for even T
    assert student["model"]["artifact"] == str(_folder(work, "Cog"))
    assert student["model"]["latent_shape"] == [1, 16, T, 4, 6]
    (comp,) = doc["comparisons"]
    assert comp["speedup"] == pytest.approx(tch["latency_ms"]["p50"] / student["latency_ms"]["p50"])
    # a dcae decoder has no teacher to compare with: one line, exit 2
    _one_line_error(cli("bench", "--checkpoint", _folder(work, "DC"), "--vs-teacher", "--runtime", "torch",
                        "--out", tmp_path / "dc"), "dcae has no teacher")


# ---------------------------------------------------------------------------------------------- export + parity


def test_onnx_fp32_parity_hunyuan(cli, work):
    art, m = _export(cli, work, "Hunyuan", "onnx", name="hunyuan-onnx-fp32")
    assert m["precision"] == "fp32" and (art.with_suffix(".ort")).is_file()
    _check_fp32(cli, work, "Hunyuan", art)


@pytest.mark.slow
@pytest.mark.parametrize("release", ["Cog", "LTX", "DC"])
def test_onnx_fp32_parity(release, cli, work):
    art, m = _export(cli, work, release, "onnx", name=f"{release.lower()}-onnx-fp32")
    assert m["precision"] == "fp32"
    _check_fp32(cli, work, release, art)


@pytest.mark.slow
@pytest.mark.parametrize("release", DISTINCT)  # Cog: Hunyuan's graph (its ONNX parity runs above)
def test_executorch_xnnpack_fp32_parity(release, cli, work):
    art, m = _export(cli, work, release, "executorch", "--delegate", "xnnpack", name=f"{release.lower()}-xnnpack")
    rep = m["report"]
    assert m["precision"] == "fp32" and rep["partitions"] == 1 and rep["non_delegated_ops"] == {}
    assert rep["backends"] == {"XnnpackBackend": 1}
    _check_fp32(cli, work, release, art)


def _check_fp16(cli, art: Path) -> None:
    """fp16 artifact vs the fp32 PyTorch reference: ``parity`` passes and PSNR >= 45 dB (off macOS the Core ML
    program is evaluated by the MIL reference evaluator in fp16 emulation)."""
    rec = _parity(cli, art)
    assert rec["psnr_db"] >= FP16_MIN_PSNR, (art.name, rec)
    print(f"\n{art.name}: fp16 PSNR {rec['psnr_db']:.1f} dB vs the fp32 reference ({rec['runtime_version']})")


@pytest.mark.slow
@pytest.mark.parametrize("release", DISTINCT)
def test_executorch_coreml_delegate(release, cli, work):
    art, m = _export(cli, work, release, "executorch", "--delegate", "coreml", name=f"{release.lower()}-et-coreml")
    rep = m["report"]
    assert m["delegate"] == "coreml" and m["precision"] == "fp16"
    assert rep["partitions"] == 1 and rep["non_delegated_ops"] == {} and rep["backends"] == {"CoreMLBackend": 1}
    res = cli("export", "--check", art)  # re-read from the .pte
    assert res.code == 0, res.err
    assert "CoreMLBackend': 1" in res.out and "non-delegated ops" in res.out
    _check_fp16(cli, art)


@pytest.mark.slow
@pytest.mark.parametrize("release", DISTINCT)
def test_coreml_rank_4(release, cli, work):
    art, m = _export(cli, work, release, "coreml", name=f"{release.lower()}-coreml")
    rep = m["report"]
    assert m["precision"] == "fp16" and rep["max_rank"] <= 4 and rep["mil_max_rank"] <= 4
    assert rep["partitions"] == 1 and rep["slow_path_ops"] == []
    res = cli("export", "--check", art)  # re-read from the saved MIL program
    assert res.code == 0, res.err
    assert "matches its manifest" in _flat(res.out)
    _check_fp16(cli, art)
