"""Bench: results schema, host runtimes on a tiny config, teacher comparison, suite report, off-platform devices.

Tiny models keep this cheap: a wan student at 1/8 width with one block per stage (saved as a checkpoint)
and the small wan teacher config (saved with save_pretrained), 64x64 pixels, 2 latent frames (5 frames).
"""

from __future__ import annotations

import copy
import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import latents_for, small_student, small_teacher
from turbo_vaed.bench.collect import Planned, make_doc, result_entry
from turbo_vaed.bench.measure import Job, run_job
from turbo_vaed.bench.options import COMPUTE_UNITS, BenchOptions
from turbo_vaed.bench.schema import load_results, validate_results
from turbo_vaed.errors import UserError

T, SIDE = 2, 64
FRAMES = 1 + 4 * (T - 1)
HOST_ALL = ("torch", "torch-lowered", "onnxruntime", "executorch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Checkpoint of a tiny wan student, a tiny wan teacher folder, and a latents file."""
    from turbo_vaed.checkpoint import save_student
    from turbo_vaed.latents_io import save_latents

    d = tmp_path_factory.mktemp("bench_tiny")
    ckpt = save_student(small_student("wan"), d / "student.safetensors")
    teacher = d / "teacher"
    small_teacher("wan").save_pretrained(str(teacher))
    lat = save_latents(d / "z.safetensors", latents_for("wan", t=T, h=SIDE // 8, w=SIDE // 8), "wan")
    return {"dir": d, "ckpt": ckpt, "teacher": teacher, "latents": lat}


def _tiny_args(tiny, *extra) -> list:
    return ["bench", "--device", "host", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"],
            "--threads", "1", *extra]


def _one_line_error(res, *needles: str) -> None:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [ln for ln in res.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.err
    assert "Traceback" not in res.err + res.out
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _check_doc(doc: dict, runtimes: tuple[str, ...], iters: int, teacher: bool) -> None:
    """Frame counts, shapes, latency arithmetic and comparisons agree with what was asked."""
    labels = [r["label"] for r in doc["results"]]
    assert labels == [f"student/{r}" for r in runtimes] + (["teacher/diffusers"] if teacher else [])
    for r in doc["results"]:
        m, lat = r["model"], r["latency_ms"]
        assert (m["width"], m["height"], m["latent_shape"]) == (SIDE, SIDE, [1, 16, T, SIDE // 8, SIDE // 8])
        assert m["output_frames"] == FRAMES, r["label"]
        assert len(lat["samples"]) == iters == r["settings"]["iterations"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
        assert r["fps"] == pytest.approx(FRAMES / (lat["p50"] / 1e3))
        assert r["runtime"]["threads"] == 1
        assert r["cold_start"]["load_ms"] > 0 and r["cold_start"]["first_run_ms"] > 0
        assert r["peak_memory_bytes"] > 50 * 2**20  # a Python process with torch loaded
        if r["model"]["decoder"] == "student":
            assert r["model"]["artifact_bytes"] > 0 and len(r["model"]["artifact_sha256"]) == 64
    comps = doc.get("comparisons", [])
    if teacher:
        t50 = doc["results"][-1]["latency_ms"]["p50"]
        assert [c["candidate"] for c in comps] == [f"student/{r}" for r in runtimes]
        for c, s in zip(comps, doc["results"], strict=False):
            assert c["baseline"] == "teacher/diffusers"
            assert c["speedup"] == pytest.approx(t50 / s["latency_ms"]["p50"])
    else:
        assert comps == []


# ---------------------------------------------------------------- torch runtimes (always available)


@pytest.fixture(scope="module")
def torch_run(tiny):
    """One CLI run: PyTorch eager and lowered students vs the teacher, latents from a file."""
    from turbo_vaed.cli import run

    out = tiny["dir"] / "torch_run.json"
    code = run([str(a) for a in _tiny_args(tiny, "-r", "torch", "-r", "torch-lowered", "--vs-teacher",
                                           "--latents", tiny["latents"], "--warmup", "1", "--iters", "3",
                                           "--out", tiny["dir"] / "out", "--json", out)])
    assert code == 0
    return out


def test_torch_runtimes_vs_teacher_consistent(torch_run):
    doc = load_results(torch_run)  # the file bench wrote passes the schema
    _check_doc(doc, ("torch", "torch-lowered"), iters=3, teacher=True)
    assert all("fresh process" in r["notes"] for r in doc["results"])


def test_schema_accepts_what_bench_writes(torch_run):
    doc = json.loads(torch_run.read_text())
    assert validate_results(doc) is doc
    assert doc["schema"] == "turbovaed.bench/1" and doc["tool"]["name"] == "turbovaed"


def _break(doc: dict, how: str) -> dict:
    d = copy.deepcopy(doc)
    r0 = d["results"][0]
    if how == "no-results":
        del d["results"]
    elif how == "wrong-schema":
        d["schema"] = "turbovaed.bench/0"
    elif how == "negative-p50":
        r0["latency_ms"]["p50"] = -1.0
    elif how == "latent-rank":
        r0["model"]["latent_shape"] = [16, 2, 8, 8]
    elif how == "bad-runtime":
        r0["runtime"]["name"] = "tensorflow"
    elif how == "dup-labels":
        d["results"].append(copy.deepcopy(r0))
    elif how == "fps-string":
        r0["fps"] = "fast"
    elif how == "bad-sha":
        r0["model"]["artifact_sha256"] = "xyz"
    elif how == "extra-top-level":
        d["surprise"] = 1
    return d


@pytest.mark.parametrize("how", ["no-results", "wrong-schema", "negative-p50", "latent-rank", "bad-runtime",
                                 "dup-labels", "fps-string", "bad-sha", "extra-top-level"])
def test_schema_rejects_malformed(torch_run, tmp_path, how):
    p = tmp_path / f"{how}.json"
    p.write_text(json.dumps(_break(json.loads(torch_run.read_text()), how)))
    with pytest.raises(UserError) as e:
        load_results(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "turbovaed.bench/1" in msg, msg


def test_schema_rejects_truncated_and_missing(torch_run, tmp_path):
    p = tmp_path / "cut.json"
    p.write_text(torch_run.read_text()[:200])
    with pytest.raises(UserError, match="is not JSON"):
        load_results(p)
    with pytest.raises(UserError, match="not found"):
        load_results(tmp_path / "nope.json")


def test_validate_option_exits_2_on_bad_file(cli, torch_run, tmp_path):
    res = cli("bench", "--validate", torch_run)
    assert res.code == 0, res.err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_break(json.loads(torch_run.read_text()), "negative-p50")))
    _one_line_error(cli("bench", "--validate", bad), "not valid turbovaed.bench/1")


def test_child_errors_come_back_as_one_line(tmp_path):
    z = latents_for("wan", t=T, h=2, w=2).numpy()
    job = Job("student/torch", "torch", "wan", str(tmp_path / "missing.safetensors"), z, 0, 1, 1)
    with pytest.raises(UserError, match="checkpoint not found"):
        run_job(job, isolate=True)


def test_in_process_measure_matches_shape(tiny):
    z = latents_for("wan", t=T, h=SIDE // 8, w=SIDE // 8).numpy()
    steps = []
    raw = run_job(Job("student/torch", "torch", "wan", str(tiny["ckpt"]), z, 1, 2, 1),
                  lambda d, n: steps.append(n), isolate=False)
    assert raw["output_shape"] == [1, 3, FRAMES, SIDE, SIDE] and raw["output_frames"] == FRAMES
    assert sum(steps) == 2 + 1 + 2 and len(raw["samples_ms"]) == 2
    assert raw["peak_rss"] >= raw["baseline_rss"] > 0


# ---------------------------------------------------------------- bad input: exit 2, one line


def test_bad_host_options(cli, tiny, tmp_path):
    _one_line_error(cli(*_tiny_args(tiny, "-r", "coreml")), "--device mac")
    _one_line_error(cli("bench", "--teacher", "random", "-r", "torch"), "--family")
    _one_line_error(cli(*_tiny_args(tiny, "--res", "60x64", "-r", "torch")), "divisible")
    _one_line_error(cli(*_tiny_args(tiny, "--latent-frames", "0", "-r", "torch")), "latent-frames")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    _one_line_error(cli("bench", odd), "model.bin")
    lone = tmp_path / "lonely.onnx"
    lone.write_bytes(b"x")
    _one_line_error(cli("bench", lone), "manifest")
    wrong = tmp_path / "teacher_ltx"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTXVideo"}))
    _one_line_error(cli("bench", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", wrong, "-r", "torch",
                        "--vs-teacher"), "ltx")


# ---------------------------------------------------------------- other devices off their platform


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the off-macOS error; on macOS --device mac runs")
def test_mac_off_platform(cli):
    _one_line_error(cli("bench", "--device", "mac"), "needs macOS")


@pytest.mark.parametrize("device", ["iphone16pro", "android"])
def test_phone_devices_without_a_phone(cli, device, monkeypatch):
    if platform.system() == "Darwin" and device == "iphone16pro":
        pytest.skip("on macOS the iPhone driver may find Xcode and a device")
    monkeypatch.setenv("ANDROID_SERIAL", "")
    _one_line_error(cli("bench", "--device", device))


def test_coreml_compute_unit_mapping():
    import coremltools as ct

    from turbo_vaed.bench.mac import COREML_UNITS, coreml_compute_unit, coreml_unit_name

    assert set(COREML_UNITS) == set(COMPUTE_UNITS)
    assert coreml_compute_unit("all") is ct.ComputeUnit.ALL
    assert coreml_compute_unit("cpuAndNeuralEngine") is ct.ComputeUnit.CPU_AND_NE
    assert coreml_compute_unit("cpuOnly") is ct.ComputeUnit.CPU_ONLY
    assert coreml_compute_unit("cpuAndGPU") is ct.ComputeUnit.CPU_AND_GPU
    assert coreml_unit_name("cpuAndNeuralEngine") == "CPU_AND_NE"
    with pytest.raises(UserError, match="cpuAndNeuralEngine"):
        coreml_unit_name("ane")


def test_require_macos():
    from turbo_vaed.bench.mac import require_macos

    require_macos("Darwin")
    with pytest.raises(UserError) as e:
        require_macos("Linux")
    assert "needs macOS" in str(e.value) and "--device host" in str(e.value)


def test_mac_results_are_schema_valid(tmp_path):
    """Everything around the Core ML prediction: jobs per compute unit, results, compute plan, device block."""
    from turbo_vaed.bench.host import random_latents
    from turbo_vaed.bench.mac import mac_device, plan_coreml, summarise_plan

    art = tmp_path / "wan.mlpackage"
    (art / "Data").mkdir(parents=True)
    (art / "Data" / "weights.bin").write_bytes(b"\0" * 1000)
    inputs = random_latents("wan", "64x64", T)
    planned = plan_coreml(art, "wan", inputs, ("all", "cpuAndNeuralEngine", "cpuOnly"), 4, 1, 3, sha256="a" * 64)
    assert [p.job.compute_units for p in planned] == ["all", "cpuAndNeuralEngine", "cpuOnly"]
    dev = mac_device(model="Mac15,3", soc="Apple M3", version="15.1")
    plan = summarise_plan([("conv", "MLNeuralEngineComputeDevice"), ("conv", "MLNeuralEngineComputeDevice"),
                           ("add", "MLCPUComputeDevice"), ("reshape", None)])
    assert plan == {"add": {"cpu": 1}, "conv": {"neural_engine": 2}, "reshape": {"unknown": 1}}
    results = []
    for i, p in enumerate(planned):
        raw = {"load_ms": 100.0, "first_run_ms": 50.0, "samples_ms": [10.0 + i, 11.0 + i, 12.0 + i],
               "output_frames": FRAMES, "output_shape": [FRAMES, 3, SIDE, SIDE], "peak_rss": 300 * 2**20,
               "baseline_rss": 200 * 2**20, "memory_method": "VmHWM", "isolated": True, "version": "9.0",
               "delegate": None, "precision": "fp16", "compute_plan": plan}
        results.append(result_entry(p, raw, dev))
    doc = make_doc(results)
    r = doc["results"][1]
    assert r["label"] == "student/coreml-cpuAndNeuralEngine" and r["runtime"]["compute_units"] == "cpuAndNeuralEngine"
    assert r["device"]["kind"] == "mac" and r["device"]["soc"] == "Apple M3" and r["device"]["os"] == "macOS"
    assert r["model"]["artifact_bytes"] >= 1000 and r["compute_plan"] == plan
    assert r["latency_ms"]["p50"] == 12.0 and r["fps"] == pytest.approx(FRAMES / 0.012)
    bad = {**raw, "output_frames": FRAMES + 1}
    with pytest.raises(UserError, match="re-export"):
        result_entry(planned[0], bad, dev)


# ---------------------------------------------------------------- suite (tiny)


def test_check_targets_logic():
    from turbo_vaed.bench.suite import check_targets

    def res(label, rt, dec, p50, fps):
        return {"label": label, "runtime": {"name": rt}, "model": {"decoder": dec}, "latency_ms": {"p50": p50},
                "fps": fps}

    doc256 = {"results": [res("s/t", "torch", "student", 100.0, 90), res("s/o", "onnxruntime", "student", 80.0, 110),
                          res("t", "diffusers", "teacher", 900.0, 10)]}
    doc480 = {"results": [res("s/t", "torch", "student", 500.0, 1.5), res("s/e", "executorch", "student", 600.0, 1.2)]}
    s = check_targets([{"family": "wan", "res": "256p", "doc": doc256},
                       {"family": "wan", "res": "480p", "doc": doc480}])
    assert s["ratios"][0]["ratio"] == pytest.approx(900 / 80) and s["ratios"][0]["student_runtime"] == "onnxruntime"
    assert s["passed"]["ratios"] is True  # 11.25 >= 5
    assert [r["passed"] for r in s["lowered_vs_eager"]] == [True, False]
    assert s["passed"]["lowered_vs_eager"] is False  # every family/preset must pass
    assert s["fps_480p_best"]["fps"] == 1.5 and s["passed"]["fps_480p"] is False
    s = check_targets([{"family": "cogvideox", "res": "256p", "doc": doc256}])
    assert s["ratios"][0]["target"] == 14.0
    assert s["passed"]["ratios"] is False and s["passed"]["fps_480p"] is None  # 11.25x < 14x; no 480p run


def test_suite_small_writes_report(tiny, tmp_path):
    from rich.console import Console

    from turbo_vaed.bench.suite import run_suite

    opts = BenchOptions(family="wan", checkpoint=tiny["ckpt"], teacher=str(tiny["teacher"]),
                        runtimes=("torch", "torch-lowered"), warmup=0, iters=2, threads=1, out_dir=tmp_path / "suite",
                        latent_frames=T + 1,
                        extra={"suite_res": ["64x64"], "suite_fast_res": ["64x32"], "suite_teacher_res": ["64x64"],
                               "suite_fps_res": "64x64", "isolate": False, "console": Console(width=200)})
    summary = run_suite(opts)
    files = sorted((tmp_path / "suite" / "json").glob("*.json"))
    assert [f.name for f in files] == ["summary.json", "wan-64x32-fast.json", "wan-64x64.json"]
    doc = load_results(tmp_path / "suite" / "json" / "wan-64x64.json")
    studs = [r for r in doc["results"] if r["model"]["decoder"] == "student"]
    teacher = doc["results"][-1]
    best = min(studs, key=lambda r: r["latency_ms"]["p50"])
    assert summary["ratios"][0]["ratio"] == pytest.approx(teacher["latency_ms"]["p50"] / best["latency_ms"]["p50"])
    fast = load_results(files[1])
    assert [r["runtime"]["name"] for r in fast["results"]] == [best["runtime"]["name"]]
    assert fast["results"][0]["model"]["width"] == 64 and fast["results"][0]["model"]["height"] == 32
    # every-runtime runs decode --latent-frames; the fastest-runtime run at the large preset one preset chunk
    assert doc["results"][0]["model"]["latent_shape"][2] == T + 1
    assert fast["results"][0]["model"]["latent_shape"][2] == 2  # export/onnx.toml [latent_frames] default
    md = (tmp_path / "suite" / "BENCHMARKS.md").read_text()
    for needle in ("## Machine", "torch 2.", "## Results", "## Targets", "## Reproduce", "--family wan",
                   f"{summary['ratios'][0]['ratio']:.1f}x"):
        assert needle in md, needle
    assert md.count("| wan |") >= 4  # 2 students + teacher at 64x64, fastest at 64x32


def test_suite_rejects_checkpoint_for_many_families(tiny):
    from turbo_vaed.bench.suite import plan_suite

    with pytest.raises(UserError, match="--family"):
        plan_suite(BenchOptions(checkpoint=tiny["ckpt"]))
    p = plan_suite(BenchOptions(family="ltx", out_dir=Path("x")))
    assert p.families == ("ltx",) and p.resolutions == ("256p", "480p") and p.fast_resolutions == ("720p",)


def test_suite_large_preset_uses_export_chunk():
    from turbo_vaed.bench.suite import chunk_latent_frames

    assert chunk_latent_frames("onnxruntime", "720p", 3) == 2  # export/onnx.toml: "720p" = 2
    assert chunk_latent_frames("executorch", "480p", 3) == 3
    assert chunk_latent_frames("torch", "720p", 1) == 1  # never more than asked for


def test_suite_every_decoder_of_one_family(tmp_path):
    """--decoders: the project student, the official Turbo-VAED and every other released decoder of hunyuan on one
    runtime beside the teacher: one validated JSON per decoder, frame counts from each decoder's own rule, the
    comparisons and the parameter/GFLOPs table in BENCHMARKS.md. Small configs stand in for the full-size ones
    (``suite_configs``), except for released decoders that are small already."""
    from rich.console import Console

    from turbo_vaed.bench.suite import full_size_configs, released_architectures, run_suite
    from turbo_vaed.config import load_student_config
    from turbo_vaed.decoders.store import random_decoder
    from turbo_vaed.families import get_family

    fam, t = "hunyuan", 2
    teacher = tmp_path / "teacher"
    small_teacher(fam).save_pretrained(str(teacher))
    official = full_size_configs("turbo-vaed")[fam]
    official = {**official, "decoder_block_out_channels": [16, 16, 32, 32], "decoder_layers_per_block": [1] * 5}
    configs = {"student": {fam: load_student_config(fam).scaled(0.125, 1).to_dict()}, "turbo-vaed": {fam: official}}
    decoders = ["student", *(a for a in released_architectures() if fam in full_size_configs(a))]
    assert decoders[:2] == ["student", "turbo-vaed"]
    opts = BenchOptions(family=fam, teacher=str(teacher), runtimes=("torch",), warmup=0, iters=1, threads=1,
                        latent_frames=t, out_dir=tmp_path / "suite",
                        extra={"suite_res": ["64x64"], "suite_teacher_res": ["64x64"], "suite_fps_res": "64x64",
                               "suite_decoders": ",".join(decoders), "suite_configs": configs, "isolate": False,
                               "console": Console(width=200)})
    summary = run_suite(opts)
    js = tmp_path / "suite" / "json"
    names = {d: f"{fam}{'' if d == 'student' else '-' + d}-64x64.json" for d in decoders}
    assert sorted(p.name for p in js.glob("*.json")) == sorted([*names.values(), "summary.json"])
    want_frames = get_family(fam).frames_out(t)
    for d, name in names.items():
        doc = load_results(js / name)
        labels = [r["label"] for r in doc["results"]]
        assert labels == [f"{d}/torch"] + (["teacher/diffusers"] if d == "student" else []), labels
        cfg = configs.get(d, {}).get(fam) or full_size_configs(d)[fam]
        with torch.device("meta"):
            own = random_decoder(d, cfg).frames_out(t)
        for r in doc["results"]:
            assert r["model"]["output_frames"] == own == want_frames, (d, r["label"])
            assert r["model"]["latent_shape"] == [1, 16, t, 8, 8] and r["model"]["family"] == fam
            assert r["fps"] == pytest.approx(want_frames / (r["latency_ms"]["p50"] / 1e3))
        if d != "student":
            assert "random weights" in doc["results"][0]["notes"]
    rows = {r["decoder"]: r for r in summary["decoders"]}
    assert set(rows) == set(decoders)
    teacher_p50 = load_results(js / names["student"])["results"][-1]["latency_ms"]["p50"]
    student_p50 = rows["student"]["p50_ms"]
    for d, r in rows.items():
        assert r["vs_teacher"] == pytest.approx(teacher_p50 / r["p50_ms"])
        if d != "student":
            assert r["vs_student"] == pytest.approx(student_p50 / r["p50_ms"])
    assert [r["family"] for r in summary["ratios"]] == [fam]  # the target is the project student's
    facts = {f["decoder"]: f for f in summary["decoder_facts"]}
    assert set(facts) == {"teacher", *decoders}
    assert all(f["parameters"] > 0 and f["gflops_per_frame"]["64x64"] > 0 for f in facts.values())
    md = (tmp_path / "suite" / "BENCHMARKS.md").read_text()
    for needle in ("## Decoders", "| hunyuan | turbo-vaed |", "| hunyuan | teacher |", "vs project student",
                   f"--decoders {','.join(decoders)}", "| hunyuan | 64x64 | 64x64 | torch | turbo-vaed | 5 |"):
        assert needle in md, needle


def test_suite_decoders_option(cli, tmp_path):
    from turbo_vaed.bench.suite import parse_decoders, plan_suite

    assert parse_decoders(None) == ("student", "turbo-vaed")
    assert parse_decoders(" turbo-vaed, student,turbo-vaed") == ("turbo-vaed", "student")
    for bad, needle in (("student,sdxl", "unknown decoder 'sdxl'"), (",", "empty")):
        with pytest.raises(UserError, match=needle):
            parse_decoders(bad)
    p = plan_suite(BenchOptions(out_dir=tmp_path))  # default: every family some decoder has, dcae included
    assert p.decoders == ("student", "turbo-vaed") and "dcae" in p.families and "ltx2" not in p.families
    assert p.decoders_for("dcae") == ["turbo-vaed"] and p.decoders_for("wan") == ["student"]
    assert plan_suite(BenchOptions(out_dir=tmp_path, extra={"suite_decoders": "turbo-vaed"})).families == (
        "hunyuan", "cogvideox", "ltx", "dcae")
    with pytest.raises(UserError, match="no decoder"):
        plan_suite(BenchOptions(family="wan", out_dir=tmp_path, extra={"suite_decoders": "turbo-vaed"}))
    _one_line_error(cli("bench", "--decoders", "student"), "--decoders applies to --suite")
    _one_line_error(cli("bench", "--suite", "--decoders", "student,nope", "--out", tmp_path / "o"), "nope")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- ONNX Runtime and ExecuTorch (need the exporters)


@pytest.fixture(scope="module")
def all_run(tiny):
    pytest.importorskip("turbo_vaed.exporters")
    pytest.importorskip("turbo_vaed.targets")
    from turbo_vaed.cli import run

    out = tiny["dir"] / "all_run.json"
    code = run([str(a) for a in _tiny_args(tiny, "--vs-teacher", "--res", f"{SIDE}x{SIDE}", "--latent-frames", str(T),
                                           "--warmup", "1", "--iters", "2", "--out", tiny["dir"] / "all",
                                           "--json", out)])
    assert code == 0
    return out


def test_every_host_runtime(all_run, tiny):
    doc = load_results(all_run)
    _check_doc(doc, HOST_ALL, iters=2, teacher=True)
    by = {r["runtime"]["name"]: r for r in doc["results"]}
    assert by["onnxruntime"]["model"]["artifact"].endswith(".onnx")
    assert by["onnxruntime"]["runtime"]["delegate"] == "CPUExecutionProvider"
    assert by["executorch"]["model"]["artifact"].endswith(".pte")
    for rt in ("onnxruntime", "executorch"):
        art = Path(by[rt]["model"]["artifact"])
        assert art.is_file() and art.with_name(f"{art.stem}.manifest.json").is_file()


def test_artifact_argument_and_reuse(cli, all_run, tiny):
    doc = load_results(all_run)
    onnx = next(r["model"]["artifact"] for r in doc["results"] if r["runtime"]["name"] == "onnxruntime")
    res = cli("bench", onnx, "--iters", "1", "--warmup", "0", "--threads", "1")
    assert res.code == 0, res.err
    _one_line_error(cli("bench", onnx, "-r", "torch"), "onnxruntime")
    # the same options again: the export is reused, not redone
    res = cli(*_tiny_args(tiny, "-r", "onnxruntime", "--res", f"{SIDE}x{SIDE}", "--latent-frames", str(T),
                          "--iters", "1", "--warmup", "0", "--out", tiny["dir"] / "all"))
    assert res.code == 0, res.err
    assert "reusing" in res.out and "exporting" not in res.out


def test_demo_bench_stage(tiny, tmp_path):
    pytest.importorskip("turbo_vaed.exporters")
    pytest.importorskip("turbo_vaed.targets")
    from rich.console import Console

    from turbo_vaed.bench.demo_stage import bench_stage
    from turbo_vaed.demo import DemoContext

    ctx = DemoContext(out_dir=tmp_path, family="wan", teacher=small_teacher("wan"), student=small_student("wan"))
    doc = bench_stage(ctx, res=f"{SIDE}x{SIDE}", latent_frames=T, warmup=0, iters=1, threads=1, isolate=False,
                      console=Console(width=200))
    assert ctx.results["bench"] is doc
    _check_doc(doc, HOST_ALL, iters=1, teacher=True)
    assert load_results(tmp_path / "bench" / "bench.json")["results"] == json.loads(json.dumps(doc["results"]))


def test_lowered_runtimes_match_reference_numbers(all_run, tiny):
    """The artifacts bench measured decode the same numbers as the PyTorch student (fp32, 1e-4)."""
    from turbo_vaed.checkpoint import load_student
    from turbo_vaed.targets import load_runner

    doc = load_results(all_run)
    z = latents_for("wan", t=T, h=SIDE // 8, w=SIDE // 8)
    with torch.inference_mode():
        ref = load_student(tiny["ckpt"], "wan")(z)[0].transpose(0, 1).numpy()
    for r in doc["results"]:
        if r["runtime"]["name"] in ("onnxruntime", "executorch"):
            out = load_runner(Path(r["model"]["artifact"]), 1).run(z[0].transpose(0, 1).contiguous().numpy())
            assert out.shape == ref.shape
            assert float(np.abs(out - ref).max()) < 1e-4, r["label"]


def test_planned_defaults():
    p = Planned(Job("x", "torch", "wan", "c", np.zeros((1, 16, 1, 1, 1), np.float32), 0, 1, 1), "student", 8, 8, None)
    assert p.check_frames and p.notes == [] and p.job.steps == 3


def test_child_crash_reports_the_error(tiny):
    from turbo_vaed.bench.measure import BenchError

    z = np.zeros((1, 3, T, 2, 2), np.float32)  # 3 channels: the wan student's conv_in wants 16
    with pytest.raises(BenchError, match="RuntimeError"):
        run_job(Job("student/torch", "torch", "wan", str(tiny["ckpt"]), z, 0, 1, 1), isolate=True)


def test_bench_mac_flow_with_a_stand_in_runner(tiny, tmp_path, monkeypatch):
    """bench_mac end to end with the Core ML prediction replaced (it needs macOS): jobs, units, teacher, doc."""
    from rich.console import Console

    import turbo_vaed.targets
    from turbo_vaed.bench import host, mac

    art = tmp_path / "wan.mlpackage"
    art.mkdir()
    (art / "weights.bin").write_bytes(b"\0" * 64)
    manifest = {"family": "wan", "preset": "64x64", "precision": "fp16", "delegate": None, "sha256": "b" * 64,
                "inputs": [{"name": "latents", "shape": [T, 16, SIDE // 8, SIDE // 8], "dtype": "float32"}]}
    seen = []

    class StandIn:
        name, version, load_ms = "coreml", "9.0", 1.0

        def __init__(self, path, threads, compute_units="all"):
            seen.append((Path(path), compute_units))
            self.manifest = manifest

        def run(self, x):
            assert list(x.shape) == manifest["inputs"][0]["shape"]
            return np.zeros((FRAMES, 3, SIDE, SIDE), np.float32)

    monkeypatch.setattr(mac, "require_macos", lambda system=None: None)
    monkeypatch.setattr(mac, "_sysctl", lambda key: {"hw.model": "Mac16,1"}.get(key, "Apple M4"))
    monkeypatch.setattr(host, "read_manifest", lambda a: manifest)
    monkeypatch.setattr(turbo_vaed.targets, "load_runner", StandIn)
    opts = BenchOptions(device="mac", artifact=art, compute_units=("all", "cpuAndNeuralEngine"), warmup=0, iters=2,
                        threads=1, vs_teacher=True, teacher=str(tiny["teacher"]),
                        extra={"isolate": False, "console": Console(width=200)})
    doc = mac.bench_mac(opts)
    assert seen == [(art, "all"), (art, "cpuAndNeuralEngine")]
    assert [r["label"] for r in doc["results"]] == ["student/coreml-all", "student/coreml-cpuAndNeuralEngine",
                                                    "teacher/diffusers"]
    for r in doc["results"]:
        assert r["device"]["kind"] == "mac" and r["device"]["model"] == "Mac16,1" and r["model"]["output_frames"] == 5
    st = doc["results"][1]
    assert st["runtime"]["precision"] == "fp16" and st["model"]["artifact_sha256"] == "b" * 64
    assert [c["candidate"] for c in doc["comparisons"]] == ["student/coreml-all", "student/coreml-cpuAndNeuralEngine"]
    with pytest.raises(UserError, match="--device host"):
        mac.bench_mac(BenchOptions(device="mac", artifact=art, runtimes=("onnxruntime",)))


def test_dead_bench_process_is_one_line_exit_2(cli, monkeypatch):
    import turbo_vaed.bench.host as host
    from turbo_vaed.bench.measure import BenchError

    def boom(opts):
        raise BenchError("student/onnxruntime: the bench process exited with code -9: killed by a signal\n"
                         "(out of memory? try a smaller --res)")

    monkeypatch.setattr(host, "bench_host", boom)
    res = cli("bench", "--device", "host", "--res", "256p")
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: benchmark failed:") and "smaller --res" in lines[0]
