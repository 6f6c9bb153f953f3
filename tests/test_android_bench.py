"""android_bench (Kotlin app) and ``turbovaed bench --device android`` (adb driver).

No Android SDK or device here: the Kotlin/Gradle sources are checked by parsing (tree-sitter-kotlin) and by
cross-checking names with the Python driver and the results schema; the driver runs against the real adb
with no device attached, and end to end against a fake adb that plays a device. Streaming artifacts
(``turbovaed export --stream``): the Kotlin manifest reader knows every field of the exporter's ``stream``
section, the extras, a streamed results JSON as ResultsJson writes it, and the driver flow. Streaming protocol v2
(``stream.controls``, ``valid_output``, ``flush_chunks``, ``restart_at``): the Kotlin reader and loop handle
every field, and the loop they plan is the one tests/test_ios_bench.py simulates (``app_stream``).
"""

from __future__ import annotations

import copy
import importlib.metadata
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.test_ios_bench import (
    CONTROLS,
    V2_FIELDS,
    _exported_stream_section,
    _loop_keys,
    app_segments,
    app_stream,
    lagging_step,
    reference_stream,
)
from turbo_vaed.bench import android
from turbo_vaed.bench.options import BenchOptions, stream_trims
from turbo_vaed.bench.schema import load_results, schema, validate_results
from turbo_vaed.bench.stats import fps, latency_summary
from turbo_vaed.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "android_bench"
APP = BENCH / "app"
SRC = APP / "src" / "main" / "java" / "dev" / "turbovaed" / "bench"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"

# ResultsJson.kt function -> the schema object it writes (path inside bench-1.schema.json)
JSON_FUNCTIONS = {
    "resultsDoc": (),
    "toolJson": ("properties", "tool"),
    "resultJson": ("$defs", "result"),
    "deviceJson": ("$defs", "result", "properties", "device"),
    "runtimeJson": ("$defs", "result", "properties", "runtime"),
    "modelJson": ("$defs", "result", "properties", "model"),
    "settingsJson": ("$defs", "result", "properties", "settings"),
    "coldStartJson": ("$defs", "result", "properties", "cold_start"),
    "latencyJson": ("$defs", "result", "properties", "latency_ms"),
    "thermalJson": ("$defs", "result", "properties", "thermal"),
    "streamJson": ("$defs", "result", "properties", "stream"),
    "steadyChunkJson": ("$defs", "result", "properties", "stream", "properties", "steady_chunk_ms"),
}
# optional schema fields the app does not write (a phone run has no teacher comparison)
NOT_WRITTEN = {"resultsDoc": {"comparisons"}}


# ---------------------------------------------------------------- Kotlin source helpers


def _parser():
    tree_sitter = pytest.importorskip("tree_sitter")
    tree_sitter_kotlin = pytest.importorskip("tree_sitter_kotlin")
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_kotlin.language()))


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _string_value(node) -> str | None:
    """The text of a plain string literal node (no templates), else None."""
    if node.type != "string_literal":
        return None
    parts = [c for c in node.children if c.type not in ('"', '"""')]
    if any(c.type != "string_content" for c in parts):
        return None
    return "".join(c.text.decode() for c in parts)


def _put_keys_by_function(path: Path) -> dict[str, list[str]]:
    """Function name -> string keys of the ``.put(key, value)`` calls in its body."""
    tree = _parser().parse(path.read_bytes())
    found: dict[str, list[str]] = {}
    for fn in _walk(tree.root_node):
        if fn.type != "function_declaration":
            continue
        name = next(c.text.decode() for c in fn.children if c.type == "identifier")
        keys = []
        for n in _walk(fn):
            if n.type != "call_expression" or n.children[0].type != "navigation_expression":
                continue
            callee = n.children[0].children[-1]
            args = next((c for c in n.children if c.type == "value_arguments"), None)
            if callee.text != b"put" or args is None:
                continue
            values = [c for c in args.children if c.type == "value_argument"]
            if len(values) != 2:
                continue  # JSONArray.put(value), not JSONObject.put(key, value)
            key = _string_value(values[0].children[0])
            assert key is not None, f"{path.name}:{n.start_point[0] + 1}: put() key is not a plain string literal"
            keys.append((values[0].start_byte, key))
        if keys:
            found[name] = [k for _, k in sorted(keys)]  # source order (chained calls nest last-first)
    return found


def _kotlin_consts(path: Path) -> dict[str, str]:
    return dict(re.findall(r'const val (\w+)\s*=\s*"([^"]*)"', path.read_text()))


def _schema_at(path: tuple[str, ...]) -> dict:
    node = schema()
    for p in path:
        node = node[p]
    return node


# ---------------------------------------------------------------- the Kotlin app and its Gradle build


def test_kotlin_and_gradle_sources_parse_without_errors():
    files = sorted([*BENCH.rglob("*.kt"), *BENCH.rglob("*.kts")])
    names = {f.name for f in files}
    assert {"BenchActivity.kt", "ResultsJson.kt", "settings.gradle.kts", "build.gradle.kts"} <= names, names
    parser = _parser()
    for f in files:
        tree = parser.parse(f.read_bytes())
        bad = [(n.type, n.start_point[0] + 1) for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing]
        assert not bad and not tree.root_node.has_error, f"{f.relative_to(ROOT)}: parse errors at {bad[:5]}"


def test_kotlin_parser_reports_broken_code():
    """The parse check above can fail: a truncated file has ERROR/MISSING nodes."""
    text = (SRC / "ResultsJson.kt").read_bytes()
    tree = _parser().parse(text[: len(text) // 2])
    assert tree.root_node.has_error


def test_gradle_build_names_app_id_dependencies_and_versions():
    app_gradle = (APP / "build.gradle.kts").read_text()
    assert re.search(r'applicationId\s*=\s*"([^"]+)"', app_gradle).group(1) == android.APP_ID
    assert re.search(r'namespace\s*=\s*"([^"]+)"', app_gradle).group(1) == android.APP_ID
    assert 'implementation("org.pytorch:executorch-android:$executorchVersion")' in app_gradle
    assert 'implementation("com.microsoft.onnxruntime:onnxruntime-android:$onnxruntimeVersion")' in app_gradle
    min_sdk = int(re.search(r"minSdk\s*=\s*(\d+)", app_gradle).group(1))
    assert min_sdk >= 24, "ExecuTorch's AAR needs API 23+, ONNX Runtime's up to 24"
    props = dict(line.split("=", 1) for line in (BENCH / "gradle.properties").read_text().splitlines()
                 if "=" in line and not line.lstrip().startswith("#"))
    for key in ("executorchVersion", "onnxruntimeVersion"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", props[key]), f"{key}={props[key]!r} is not a release version"
    # the .pte format must match: the AAR version equals the executorch package that exports
    exporter = importlib.metadata.version("executorch").split("+")[0]
    assert props["executorchVersion"] == exporter, "bump executorchVersion in android_bench/gradle.properties"
    settings = (BENCH / "settings.gradle.kts").read_text()
    assert 'include(":app")' in settings and "mavenCentral()" in settings and "google()" in settings
    root = (BENCH / "build.gradle.kts").read_text()
    assert 'id("com.android.application") version' in root and 'id("org.jetbrains.kotlin.android") version' in root


def test_manifest_declares_the_activity_the_driver_launches():
    pkg, cls = android.ACTIVITY.split("/")
    assert pkg == android.APP_ID
    root = ET.parse(APP / "src" / "main" / "AndroidManifest.xml").getroot()
    activities = root.findall("./application/activity")
    declared = {a.get(ANDROID_NS + "name"): a for a in activities}
    assert cls in declared, f"{cls} not in AndroidManifest.xml activities {list(declared)}"
    assert declared[cls].get(ANDROID_NS + "exported") == "true", "am start from adb needs exported=true"
    source = (SRC / "BenchActivity.kt").read_text()
    assert "package dev.turbovaed.bench" in source and f"class {cls.lstrip('.')} : Activity()" in source


def test_driver_and_app_agree_on_extras_files_and_markers():
    extras = _kotlin_consts(SRC / "BenchConfig.kt")
    cmd = android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=3, warmup=1, output="o.json",
                            threads=2, latents="/l.f32", manifest="/m.manifest.json", ep="cpu", stream_frames=21,
                            trim=True)
    sent = [cmd[i + 1] for i, tok in enumerate(cmd) if tok in ("--es", "--ei")]
    unread = set(sent) - set(extras.values())
    assert not unread, f"driver sends extras the app does not read: {unread}"
    activity = (SRC / "BenchActivity.kt").read_text()
    consts = _kotlin_consts(SRC / "BenchActivity.kt")
    assert consts["TAG"] == android.LOG_TAG and consts["DONE_MARKER"] == android.DONE_MARKER
    assert consts["ERROR_SUFFIX"] == android.ERROR_SUFFIX
    assert "getExternalFilesDir(null)" in activity
    assert android.RESULTS_DIR.endswith(f"/Android/data/{android.APP_ID}/files")
    assert "writeAtomically" in activity and "renameTo" in (SRC / "ResultsJson.kt").read_text()


# ---------------------------------------------------------------- JSON keys written by the app vs the schema


def _kotlin_json_keys() -> dict[str, list[str]]:
    return _put_keys_by_function(SRC / "ResultsJson.kt")


def test_kotlin_json_keys_match_the_schema():
    found = _kotlin_json_keys()
    assert set(found) == set(JSON_FUNCTIONS), f"ResultsJson.kt JSON functions changed: {sorted(found)}"
    for fn, path in JSON_FUNCTIONS.items():
        obj = _schema_at(path)
        props, required = set(obj["properties"]), set(obj.get("required", ()))
        keys = found[fn]
        assert len(keys) == len(set(keys)), f"{fn} writes a key twice: {keys}"
        assert set(keys) <= props, f"{fn} writes keys the schema lacks: {set(keys) - props}"
        assert required <= set(keys), f"{fn} misses required keys {required - set(keys)}"
        assert set(keys) == props - NOT_WRITTEN.get(fn, set()), f"{fn} leaves out {props - set(keys)}"


def test_kotlin_constants_are_schema_values():
    consts = _kotlin_consts(SRC / "ResultsJson.kt")
    s = schema()
    assert consts["SCHEMA"] == s["properties"]["schema"]["const"]
    assert consts["TOOL_NAME"] in s["properties"]["tool"]["properties"]["name"]["enum"]
    result = s["$defs"]["result"]["properties"]
    kinds = result["device"]["properties"]["kind"]["enum"]
    device_src = (SRC / "DeviceInfo.kt").read_text()
    for kind in re.findall(r'"(android(?:-emulator)?)"', device_src):
        assert kind in kinds
    runtime_names = result["runtime"]["properties"]["name"]["enum"]
    for name in re.findall(r'override val runtimeName = "(\w+)"', (SRC / "Runners.kt").read_text()):
        assert name in runtime_names


def _sample_doc() -> dict:
    """A document shaped like ResultsJson.resultsDoc writes it (keys checked against the Kotlin source)."""
    samples = [101.5, 99.0, 100.25, 98.5, 103.0]
    srt = sorted(samples)
    return {
        "schema": "turbovaed.bench/1",
        "created": "2026-11-23T10:00:00Z",
        "tool": {"name": "android_bench", "version": "0.1.0"},
        "results": [{
            "label": "student/executorch",
            "device": {"kind": "android", "model": "Pixel 8", "os": "Android", "os_version": "15",
                       "cpu": "arm64-v8a", "soc": "Google Tensor G3", "cpu_count": 9, "memory_bytes": 7_900_000_000},
            "runtime": {"name": "executorch", "version": "1.5.1", "compute_units": None, "delegate": "xnnpack",
                        "threads": 4, "precision": "fp32"},
            "model": {"family": "wan", "decoder": "student", "artifact": "wan-256p.pte", "artifact_sha256": "ab" * 32,
                      "artifact_bytes": 12_345_678, "preset": "256p", "width": 256, "height": 256,
                      "latent_shape": [1, 16, 3, 32, 32], "output_frames": 9},
            "settings": {"warmup": 2, "iterations": 5},
            "cold_start": {"load_ms": 85.25, "first_run_ms": 160.5},
            "latency_ms": {"min": srt[0], "p50": srt[2], "p90": 102.4, "max": srt[-1],
                           "mean": sum(samples) / len(samples), "samples": samples},
            "fps": 9 / (srt[2] / 1000.0),
            "peak_memory_bytes": 412_000_000,
            "thermal": {"before": "none", "after": "light"},
            "compute_plan": None,
            "notes": "peak_memory_bytes is the process peak RSS (VmHWM); random N(0,1) latents, seed 0; API 35",
            "stream": None,
        }],
    }


def test_sample_app_json_validates_and_parses(tmp_path):
    doc = _sample_doc()
    keys = _kotlin_json_keys()
    r = doc["results"][0]
    assert list(doc) == keys["resultsDoc"] and list(doc["tool"]) == keys["toolJson"]
    assert list(r) == keys["resultJson"]
    for block, fn in (("device", "deviceJson"), ("runtime", "runtimeJson"), ("model", "modelJson"),
                      ("settings", "settingsJson"), ("cold_start", "coldStartJson"), ("latency_ms", "latencyJson"),
                      ("thermal", "thermalJson")):
        assert list(r[block]) == keys[fn], block
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc, indent=2))
    loaded = load_results(path)
    lat = loaded["results"][0]["latency_ms"]
    # Stats.kt interpolates percentiles like turbo_vaed.bench.stats (numpy)
    expected = latency_summary(lat["samples"])
    for k in ("min", "p50", "p90", "max", "mean"):
        assert lat[k] == pytest.approx(expected[k]), k
    assert loaded["results"][0]["fps"] == pytest.approx(fps(9, lat["p50"]))
    from rich.console import Console

    from turbo_vaed.bench.report import print_results

    buf = io.StringIO()
    print_results(loaded, "android", Console(file=buf, width=250))
    assert "student/executorch" in buf.getvalue() and "android (Pixel 8)" in buf.getvalue()


def test_schema_rejects_what_org_json_would_break():
    """Kotlin null dropped by org.json (missing key) or a 4-D latent shape must not validate."""
    doc = _sample_doc()
    bad = copy.deepcopy(doc)
    del bad["results"][0]["device"]["os_version"]
    with pytest.raises(UserError, match="os_version"):
        validate_results(bad)
    bad = copy.deepcopy(doc)
    bad["results"][0]["model"]["latent_shape"] = [3, 16, 32, 32]
    with pytest.raises(UserError, match="latent_shape"):
        validate_results(bad)


# ---------------------------------------------------------------- adb command lines


def test_adb_command_lines():
    adb, s = "/usr/bin/adb", "emulator-5554"
    assert android.devices_cmd(adb) == [adb, "devices", "-l"]
    assert android.mkdir_cmd(adb, s) == [adb, "-s", s, "shell", "mkdir", "-p", "/data/local/tmp/turbovaed"]
    assert android.push_cmd(adb, s, Path("/w/out/wan 256p.pte"), "/data/local/tmp/turbovaed/wan 256p.pte") == [
        adb, "-s", s, "push", "/w/out/wan 256p.pte", "/data/local/tmp/turbovaed/wan 256p.pte"]
    assert android.install_cmd(adb, s, Path("/b/app-release.apk")) == [
        adb, "-s", s, "install", "-r", "-t", "/b/app-release.apk"]
    assert android.pull_cmd(adb, s, "/sdcard/Android/data/dev.turbovaed.bench/files/r.json", Path("/tmp/r.json")) == [
        adb, "-s", s, "pull", "/sdcard/Android/data/dev.turbovaed.bench/files/r.json", "/tmp/r.json"]
    assert android.force_stop_cmd(adb, s) == [adb, "-s", s, "shell", "am", "force-stop", "dev.turbovaed.bench"]
    assert android.rm_cmd(adb, s, "/a b") == [adb, "-s", s, "shell", "rm", "-f", "'/a b'"]
    assert android.chmod_cmd(adb, s, "/x", "/y") == [adb, "-s", s, "shell", "chmod", "644", "/x", "/y"]


def test_start_command_line():
    adb, s = "adb", "R5CT1234"
    cmd = android.start_cmd(adb, s, model="/data/local/tmp/turbovaed/wan.pte", runtime="executorch",
                            iters=5, warmup=1, threads=4, output="r.json")
    assert cmd == [adb, "-s", s, "shell", "am", "start", "-S", "-n", "dev.turbovaed.bench/.BenchActivity",
                   "--es", "model", "/data/local/tmp/turbovaed/wan.pte", "--es", "runtime", "executorch",
                   "--ei", "iters", "5", "--ei", "warmup", "1", "--ei", "threads", "4", "--es", "output", "r.json"]
    # no --threads: the app's default (runtime picks); a path with a space survives the remote shell
    cmd = android.start_cmd(adb, s, model="/data/local/tmp/turbovaed/my model.onnx", runtime="onnxruntime",
                            iters=2, warmup=0, output="r.json", latents="/data/local/tmp/turbovaed/z.f32")
    assert "threads" not in cmd
    assert cmd[cmd.index("model") + 1] == "'/data/local/tmp/turbovaed/my model.onnx'"
    assert cmd[-2:] == ["latents", "/data/local/tmp/turbovaed/z.f32"]


def test_poll_and_remote_names():
    names = android.remote_names(Path("/w/out/wan.256p.ort"))
    assert names == {"model": "/data/local/tmp/turbovaed/wan.256p.ort",
                     "manifest": "/data/local/tmp/turbovaed/wan.256p.manifest.json",
                     "latents": "/data/local/tmp/turbovaed/wan.256p.latents.f32"}
    cmd = android.poll_cmd("adb", "S", "/sdcard/x/r.json")
    assert cmd[:4] == ["adb", "-s", "S", "shell"] and len(cmd) == 5
    assert "[ -f /sdcard/x/r.json ]" in cmd[4] and "[ -f /sdcard/x/r.json.error ]" in cmd[4]
    assert "pidof dev.turbovaed.bench" in cmd[4]
    name = android.result_name(Path("/w/.odd name.pte"), "executorch", 17)
    assert name == "turbovaed-odd_name-executorch-17.json"


def test_gradle_command_and_apk_path(tmp_path):
    assert android.gradle_cmd(tmp_path, "/opt/gradle") == ["/opt/gradle", "-p", str(tmp_path), ":app:assembleRelease",
                                                           "--console=plain"]
    assert android.gradle_cmd(tmp_path, "g", "debug")[3] == ":app:assembleDebug"
    assert android.apk_path(tmp_path) == tmp_path / "app/build/outputs/apk/release/app-release.apk"


# ---------------------------------------------------------------- adb devices parsing and device choice

DEVICES_OUT = """List of devices attached
emulator-5554          device product:sdk_gphone64_x86_64 model:sdk_gphone64_x86_64 device:emu64xa transport_id:1
R5CT1234               unauthorized usb:1-1 transport_id:2
0123ABCD               no permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:3
192.168.1.5:5555       offline transport_id:4
"""  # noqa: E501


def test_parse_devices():
    devs = android.parse_devices(DEVICES_OUT)
    assert [d.serial for d in devs] == ["emulator-5554", "R5CT1234", "0123ABCD", "192.168.1.5:5555"]
    assert [d.state.split()[0] for d in devs] == ["device", "unauthorized", "no", "offline"]
    assert devs[0].details["model"] == "sdk_gphone64_x86_64" and devs[2].details["usb"] == "1-2"
    assert devs[2].state.startswith("no permissions")
    assert android.parse_devices("List of devices attached\n\n") == []


def test_pick_device():
    devs = android.parse_devices(DEVICES_OUT)
    assert android.pick_device(devs, None).serial == "emulator-5554"
    assert android.pick_device(devs, "emulator-5554").serial == "emulator-5554"
    with pytest.raises(UserError, match="R5CT1234 is unauthorized: unlock the phone"):
        android.pick_device(devs, "R5CT1234")
    with pytest.raises(UserError, match=r"no Android device with serial XYZ: `adb devices -l` listed emulator-5554"):
        android.pick_device(devs, "XYZ")
    with pytest.raises(UserError, match="listed no devices; connect a phone"):
        android.pick_device([], None)
    with pytest.raises(UserError, match=r"listed R5CT1234 \(unauthorized\)"):
        android.pick_device(devs[1:2], None)
    two = android.parse_devices("emulator-5554 device\nemulator-5556 device\n")
    with pytest.raises(UserError, match=r"several Android devices attached \(emulator-5554, emulator-5556\)"):
        android.pick_device(two, None)


# ---------------------------------------------------------------- artifact, APK and latents checks


def _artifact(tmp_path: Path, name: str = "wan-256p.pte", target: str = "executorch", stream: bool = False,
              v2: dict | None = None) -> Path:
    """An artifact and its manifest; ``stream``: a streaming step of the exporter's layout (chunks of 2); ``v2``:
    its stream section turned into protocol v2 with these fields (controls, valid_output, ...)."""
    art = tmp_path / name
    art.write_bytes(b"\0" * 64)
    manifest = {
        "schema": "turbovaed.manifest/2", "name": art.stem, "artifact": art.name, "target": target,
        "delegate": "xnnpack" if target == "executorch" else None, "preset": "256p", "family": "wan",
        "width": 256, "height": 256, "latent_frames": 3, "output_frames": 9, "precision": "fp32",
        "inputs": [{"name": "latents", "shape": [3, 16, 4, 4], "dtype": "float32"}],
        "outputs": [{"name": "frames", "shape": [9, 3, 32, 32], "dtype": "float32"}],
        "decoder": {"arch": "student", "config": {}, "checkpoint": "random"}, "toolchain": {},
        "report": {"op_counts": {}, "max_rank": 4, "slow_path_ops": [], "partitions": 1, "non_delegated_ops": {},
                   "weights_bytes": 0, "gflops_per_frame": None},
        "parity": None, "size_bytes": 64, "sha256": None, "created": "2026-12-01T00:00:00Z",
    }
    if stream or v2 is not None:  # what `turbovaed export --stream` writes (exporters.add_stream_section), chunks of 2
        exported = _exported_stream_section()
        for t in (*exported["inputs"], *exported["outputs"]):
            t["dtype"] = "float32"
        for st in exported["stream"]["states"]:
            st["dtype"] = "float32"
        manifest.update(latent_frames=2, output_frames=8, inputs=exported["inputs"], outputs=exported["outputs"],
                        stream=exported["stream"])
    if v2 is not None:
        manifest["stream"] = _as_v2(manifest, **v2)
    art.with_name(f"{art.stem}.manifest.json").write_text(json.dumps(manifest))
    return art


def _as_v2(manifest: dict, controls=("first", "start", "remaining"), valid_output="valid", flush_chunks=1,
           restart_at=()) -> dict:
    """``manifest`` (inputs, outputs: changed in place) and its stream section in protocol v2: ``controls`` after
    the latents, ``valid_output`` [frames_per_chunk, 1, 1, 1] right after the frames."""
    stream = dict(manifest["stream"])
    flag = {"shape": [1, 1, 1, 1], "dtype": manifest["inputs"][0]["dtype"]}
    states = [t for t in manifest["inputs"] if t["name"] in {s["name"] for s in stream["states"]}]
    manifest["inputs"][:] = [manifest["inputs"][0], *({"name": c, **flag} for c in controls), *states]
    if valid_output:
        manifest["outputs"].insert(1, {"name": valid_output, "shape": [stream["frames_per_chunk"], 1, 1, 1],
                                       "dtype": manifest["outputs"][0]["dtype"]})
    stream.update(controls=list(controls), valid_output=valid_output, flush_chunks=flush_chunks,
                  restart_at=list(restart_at))
    return stream


def test_check_artifact(tmp_path):
    art = android.check_artifact(BenchOptions(device="android", artifact=_artifact(tmp_path)))
    assert art.runtime == "executorch" and art.input_shape == [3, 16, 4, 4]
    ort = android.check_artifact(BenchOptions(artifact=_artifact(tmp_path, "m.ort", "onnx")))
    assert ort.runtime == "onnxruntime" and ort.manifest_path.name == "m.manifest.json"
    with pytest.raises(UserError, match="needs an exported artifact"):
        android.check_artifact(BenchOptions())
    with pytest.raises(UserError, match="runs with executorch on Android, not onnxruntime"):
        android.check_artifact(BenchOptions(artifact=_artifact(tmp_path), runtimes=("onnxruntime",)))
    with pytest.raises(UserError, match="says target onnx"):
        android.check_artifact(BenchOptions(artifact=_artifact(tmp_path, "x.pte", "onnx")))
    coreml = _artifact(tmp_path, "ios.pte")
    m = json.loads(coreml.with_name("ios.manifest.json").read_text())
    coreml.with_name("ios.manifest.json").write_text(json.dumps({**m, "delegate": "coreml"}))
    with pytest.raises(UserError, match="uses the coreml delegate, which Android's ExecuTorch lacks"):
        android.check_artifact(BenchOptions(artifact=coreml))
    pkg = tmp_path / "m.mlpackage"
    pkg.write_bytes(b"x")
    with pytest.raises(UserError, match="cannot run on Android"):
        android.check_artifact(BenchOptions(artifact=pkg))
    lone = tmp_path / "lone.pte"
    lone.write_bytes(b"x")
    with pytest.raises(UserError, match="manifest not found"):
        android.check_artifact(BenchOptions(artifact=lone))


def test_resolve_apk(tmp_path):
    apk = tmp_path / "prebuilt.apk"
    apk.write_bytes(b"PK")
    assert android.resolve_apk(BenchOptions(), {android.APK_ENV: str(apk)}) == (apk, None)
    assert android.resolve_apk(BenchOptions(extra={"apk": str(apk)}), {}) == (apk, None)
    with pytest.raises(UserError, match="APK not found"):
        android.resolve_apk(BenchOptions(), {android.APK_ENV: str(tmp_path / "none.apk")})
    with pytest.raises(UserError, match="set ANDROID_HOME to an Android SDK .* or set TURBOVAED_ANDROID_APK"):
        android.resolve_apk(BenchOptions(), {})
    # an SDK and the sources: build when the APK is missing or older than a source file
    sdk = tmp_path / "sdk"
    sdk.mkdir()
    bench = tmp_path / "bench"
    (bench / "app" / "src" / "main").mkdir(parents=True)
    (bench / "settings.gradle.kts").write_text("")
    src = bench / "app" / "src" / "main" / "A.kt"
    src.write_text("")
    env = {"ANDROID_HOME": str(sdk)}
    out, build = android.resolve_apk(BenchOptions(), env, bench, which=lambda n: f"/usr/bin/{n}")
    assert out == android.apk_path(bench) and build == android.gradle_cmd(bench, "/usr/bin/gradle")
    with pytest.raises(UserError, match="no ./gradlew in android_bench and no gradle on PATH"):
        android.resolve_apk(BenchOptions(), env, bench, which=lambda n: None)
    out.parent.mkdir(parents=True)
    out.write_bytes(b"PK")
    import os

    os.utime(src, (1, 1))
    assert android.resolve_apk(BenchOptions(), env, bench, which=lambda n: None) == (out, None)


def test_write_latents_f32(tmp_path):
    import numpy as np
    import torch

    from turbo_vaed.latents_io import save_latents

    z = torch.arange(1 * 16 * 3 * 2 * 2, dtype=torch.float32).reshape(1, 16, 3, 2, 2)
    src = save_latents(tmp_path / "z.safetensors", z, "wan")
    raw = android.write_latents_f32(src, [3, 16, 2, 2], tmp_path / "z.f32")
    arr = np.frombuffer(raw.read_bytes(), dtype="<f4").reshape(3, 16, 2, 2)
    assert np.array_equal(arr, z[0].permute(1, 0, 2, 3).numpy())
    with pytest.raises(UserError, match=r"the artifact needs \(1, 16, 4, 2, 2\)"):
        android.write_latents_f32(src, [4, 16, 2, 2], tmp_path / "bad.f32")


# ---------------------------------------------------------------- polling with a scripted adb


class _Scripted:
    """Stands in for subprocess: answers each poll with the next scripted state."""

    def __init__(self, states: list[str], error_text: str = "") -> None:
        self.states, self.error_text, self.calls = list(states), error_text, []

    def __call__(self, cmd, timeout):
        self.calls.append(list(cmd))
        out = self.error_text if "cat" in cmd else (self.states.pop(0) if self.states else "running")
        return subprocess.CompletedProcess(cmd, 0, out + "\n", "")


def test_wait_for_result_states():
    run = _Scripted(["gone", "running", "gone", "running", "done"])  # app not up yet, then running
    android.wait_for_result(android.Adb("adb", "S", run), "/r.json", 60, sleep=lambda s: None)
    assert len(run.calls) == 5
    run = _Scripted(["running", "failed"], "model not found or not readable by the app: /x.pte")
    with pytest.raises(UserError, match="android_bench failed on S: model not found or not readable"):
        android.wait_for_result(android.Adb("adb", "S", run), "/r.json", 60, sleep=lambda s: None)
    with pytest.raises(UserError, match="stopped on S without writing a result"):
        android.wait_for_result(android.Adb("adb", "S", _Scripted(["gone"] * android.GONE_POLLS)), "/r.json", 60,
                                sleep=lambda s: None)
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(UserError, match="no result from android_bench on S after 25 s"):
        android.wait_for_result(android.Adb("adb", "S", _Scripted([])), "/r.json", 25,
                                clock=lambda: float(next(ticks)), sleep=lambda s: None)


def test_am_start_error_is_reported():
    def run(cmd, timeout):
        return subprocess.CompletedProcess(cmd, 0, "Starting: Intent { cmp=dev.turbovaed.bench/.BenchActivity }\n"
                                           "Error: Activity class {dev.turbovaed.bench/dev.turbovaed.bench."
                                           "BenchActivity} does not exist.\n", "")

    with pytest.raises(UserError, match="starting android_bench failed on S: Error: Activity class"):
        android.Adb("adb", "S", run)(["adb", "shell", "am", "start"], "starting android_bench")


# ---------------------------------------------------------------- end to end through the CLI

FAKE_ADB = r'''#!{python}
"""A fake adb that plays one emulator: logs its argv, answers devices/poll, and 'pulls' a canned result."""
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:2] == ["devices", "-l"]:
    print("List of devices attached")
    print("emulator-5554          device product:sdk_gphone64_x86_64 model:sdk_gphone64_x86_64 transport_id:1")
    sys.exit(0)
assert args[:2] == ["-s", "emulator-5554"], args
cmd = args[2:]
if cmd[0] == "pull":
    shutil.copy(os.environ["FAKE_ADB_RESULT"], cmd[2])
    print("1 file pulled")
elif cmd[0] == "shell" and len(cmd) == 2 and cmd[1].startswith("if [ -f"):
    print("done")
elif cmd[0] == "install":
    print("Performing Streamed Install")
    print("Success")
elif cmd[:3] == ["shell", "am", "start"]:
    print("Starting: Intent { cmp=dev.turbovaed.bench/.BenchActivity (has extras) }")
    print("Status: ok")
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.replace("{python}", sys.executable))
    adb.chmod(0o755)
    log = tmp_path / "adb.log"
    result = tmp_path / "device-result.json"
    result.write_text(json.dumps(_sample_doc()))
    apk = tmp_path / "app-release.apk"
    apk.write_bytes(b"PK")
    monkeypatch.setenv("PATH", f"{bin_dir}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_RESULT", str(result))
    monkeypatch.setenv(android.APK_ENV, str(apk))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def test_bench_android_end_to_end_with_fake_adb(cli, tmp_path, fake_adb):
    art = _artifact(tmp_path)
    out = tmp_path / "android.json"
    res = cli("bench", "--device", "android", art, "--iters", "3", "--warmup", "1", "--threads", "2", "--json", out)
    assert res.code == 0, res.err
    assert "turbovaed bench --device android" in res.out and f"wrote {out}" in res.out
    assert load_results(out)["results"][0]["device"]["model"] == "Pixel 8"
    calls = fake_adb()
    s = ["-s", "emulator-5554"]
    assert calls[0] == ["devices", "-l"]
    calls = calls[1:]
    assert all(c[:2] == s for c in calls)
    assert s + ["push", str(art), "/data/local/tmp/turbovaed/wan-256p.pte"] in calls
    assert s + ["push", str(art.with_name("wan-256p.manifest.json")),
                "/data/local/tmp/turbovaed/wan-256p.manifest.json"] in calls
    assert s + ["install", "-r", "-t", str(tmp_path / "app-release.apk")] in calls
    start = next(c for c in calls if c[2:5] == ["shell", "am", "start"])
    extras = dict(zip(start[start.index("--es"):][1::3], start[start.index("--es"):][2::3], strict=False))
    assert extras["model"] == "/data/local/tmp/turbovaed/wan-256p.pte" and extras["runtime"] == "executorch"
    assert extras["iters"] == "3" and extras["warmup"] == "1" and extras["threads"] == "2"
    assert re.fullmatch(r"turbovaed-wan-256p-executorch-\d+\.json", extras["output"])
    pull = next(c for c in calls if c[2] == "pull")
    assert pull[3] == f"{android.RESULTS_DIR}/{extras['output']}"
    order = [c[2] if c[2] != "shell" else c[3] for c in calls]
    assert order.index("push") < order.index("install") < order.index("am") < order.index("pull")


def test_bench_android_rejects_an_invalid_device_result(cli, tmp_path, fake_adb, monkeypatch):
    bad = _sample_doc()
    del bad["results"][0]["latency_ms"]
    (tmp_path / "device-result.json").write_text(json.dumps(bad))
    res = cli("bench", "--device", "android", _artifact(tmp_path))
    assert res.code == 2 and "is not valid turbovaed.bench/1" in res.err and "latency_ms" in res.err


# ---------------------------------------------------------------- the real adb, no device


def test_no_adb_on_path(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    res = cli("bench", "--device", "android", _artifact(tmp_path))
    assert res.code == 2
    assert res.err.strip().count("\n") == 0 and "adb not found on PATH: install it" in res.err


@pytest.fixture
def adb_server():
    """The real adb's server on loopback (127.0.0.1:5037); stopped again if this test started it."""
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("adb is not installed (CI installs Debian's adb via .ci/run)")
    started = subprocess.run([adb, "start-server"], capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        pytest.skip(f"adb server did not start: {(started.stderr or started.stdout).strip()[:200]}")
    devices = android.parse_devices(subprocess.run([adb, "devices"], capture_output=True, text=True,
                                                   timeout=60).stdout)
    if devices:
        pytest.skip(f"a device is attached ({devices[0].serial}); this test needs none")
    yield adb
    if "daemon started successfully" in (started.stderr + started.stdout):
        subprocess.run([adb, "kill-server"], capture_output=True, timeout=60)


def test_no_device_with_real_adb(cli, tmp_path, adb_server, monkeypatch):
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    res = cli("bench", "--device", "android", _artifact(tmp_path))
    assert res.code == 2
    err = res.err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("error: no Android device ready: `adb devices -l` listed no devices")
    res = cli("bench", "--device", "android", _artifact(tmp_path), "--serial", "emulator-5554")
    assert res.code == 2 and "no Android device with serial emulator-5554" in res.err


# ---------------------------------------------------------------- streaming artifacts (export --stream)


def _function_text(path: Path, name: str) -> str:
    tree = _parser().parse(path.read_bytes())
    for fn in _walk(tree.root_node):
        if fn.type == "function_declaration" and any(c.type == "identifier" and c.text.decode() == name
                                                     for c in fn.children):
            return fn.text.decode()
    raise AssertionError(f"no function {name} in {path.name}")


def test_kotlin_reads_every_stream_field_the_exporter_writes(tmp_path):
    manifest = json.loads(_artifact(tmp_path, stream=True).with_name("wan-256p.manifest.json").read_text())
    stream = manifest["stream"]
    # parseStream and the readers it calls for the v2 fields
    parse = _function_text(SRC / "ModelManifest.kt", "parseStream") + _function_text(SRC / "ModelManifest.kt",
                                                                                      "parseRestartAt")
    read = set(re.findall(r'(?:get|opt|isNull)\w*\("(\w+)"', parse)) | set(re.findall(
        r'(?:stringOrNull|intOrNull)\(s, "(\w+)"', parse))
    loop_fields = {"chunk_latent_frames", "frames_per_chunk", "first_chunk_skip", "states"}
    assert loop_fields <= set(stream) and loop_fields | set(V2_FIELDS) <= read
    assert _loop_keys(stream) <= read  # every field that changes the loop is read
    assert set(stream["states"][0]) <= read  # name shape dtype init next
    src = (SRC / "ModelManifest.kt").read_text()
    assert 'isNull("stream")' in src and 'getJSONObject("stream")' in src
    consts = _kotlin_consts(SRC / "ModelManifest.kt")
    assert [consts["FIRST_INPUT"], consts["TRIM_INPUT"]] == [i["name"] for i in manifest["inputs"][1:3]]
    from turbo_vaed.exporters.manifest import LEGACY_SCHEMA, SCHEMA

    assert (consts["SCHEMA"], consts["SCHEMA_V1"]) == (SCHEMA, LEGACY_SCHEMA)  # reads what export writes now
    from turbo_vaed.bench.stream import DEFAULT_CLIP_LATENT_FRAMES

    assert f"DEFAULT_CLIP_LATENT_FRAMES = {DEFAULT_CLIP_LATENT_FRAMES}" in src
    assert android.DEFAULT_STREAM_FRAMES == DEFAULT_CLIP_LATENT_FRAMES
    assert "firstChunkSkip" in _function_text(SRC / "ModelManifest.kt", "keptFrames")
    # each state's `next` output is fed back as that state, by name (ONNX Runtime: written in place into the state's
    # own input tensor, see test_ort_stream_runner_binds_next_states_in_place) or by index (ExecuTorch)
    runners = (SRC / "Runners.kt").read_text()
    assert [o["name"] for o in manifest["outputs"][1:]] == [s["next"] for s in stream["states"]]
    assert "st.next to owned.getValue(st.name).second" in runners and "session.run(feeds, requested, pinned)" in runners
    assert "it.name == st.next" in runners and "module.forward(*values)" in runners
    executorch = runners.split("class ExecuTorchStreamRunner")[1].split("class OrtStreamRunner")[0]
    assert "getDataAsFloatArray()" in executorch  # ExecuTorch's outputs alias its memory: copied out
    # like the host's streaming ONNX Runtime runner: no CPU arena, no memory patterns
    assert "setCPUArenaAllocator(false)" in runners and "setMemoryPatternOptimization(false)" in runners
    bench = (SRC / "Bench.kt").read_text()
    assert "measureStream(manifest" in bench and "spec.plan(clipFrames, config.trims)" in bench
    assert "c.keptFrames ?: 0" in bench  # v1: the planned count
    assert "keptFrames(inSegment, n, segmentTrim)" in _function_text(SRC / "ModelManifest.kt", "plan")
    assert '"student/${runner.runtimeName}-stream"' in bench


def _sample_stream_doc(clip: int = 21) -> dict:
    """A streamed result as Bench.measureStream + ResultsJson write it (21 latent frames in chunks of 2)."""
    doc = _sample_doc()
    r = doc["results"][0]
    samples = [80.5, 79.0, 81.25, 78.5, 80.0, 82.0, 79.5, 80.25, 81.0, 79.75][: max(-(-clip // 2) - 1, 1)]
    lat = latency_summary(samples)
    frames = 1 + 4 * (clip - 1)
    r.update(label="student/executorch-stream", settings={"warmup": 0, "iterations": len(samples)},
             cold_start={"load_ms": 85.25, "first_run_ms": 190.5}, latency_ms=lat, fps=fps(8, lat["p50"]))
    r["model"].update(latent_shape=[1, 16, clip, 4, 4], output_frames=frames, width=32, height=32)
    r["stream"] = {"chunk_latent_frames": 2, "latent_frames": clip, "frames": frames, "first_chunk_ms": 190.5,
                   "steady_chunk_ms": {k: lat[k] for k in ("min", "p50", "p90", "max", "mean")},
                   "sustained_fps": frames / ((190.5 + sum(samples)) / 1000 + 0.01),
                   "first_frame_ms": 191.0, "calls": 1 + len(samples)}
    return doc


def test_sample_stream_json_validates_and_parses(tmp_path):
    doc = _sample_stream_doc()
    keys = _kotlin_json_keys()
    r = doc["results"][0]
    assert list(r) == keys["resultJson"]
    assert list(r["stream"]) == keys["streamJson"] and list(r["stream"]["steady_chunk_ms"]) == keys["steadyChunkJson"]
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(doc, indent=2))
    loaded = load_results(path)["results"][0]
    assert loaded["stream"]["frames"] == 81 == loaded["model"]["output_frames"]
    bad = copy.deepcopy(doc)
    del bad["results"][0]["stream"]["steady_chunk_ms"]["p90"]
    with pytest.raises(UserError, match="p90"):
        validate_results(bad)


def test_start_command_line_stream():
    cmd = android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=5, warmup=1, output="r.json",
                            stream_frames=21, trim=True)
    assert cmd[-6:] == ["--ei", "stream_frames", "21", "--ei", "trim", "1"]
    cmd = android.start_cmd("adb", "S", model="/m.onnx", runtime="onnxruntime", iters=5, warmup=1, output="r.json",
                            stream_frames=16, trim=False)
    assert cmd[-6:] == ["--ei", "stream_frames", "16", "--ei", "trim", "0"]
    assert "stream_frames" not in android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=5,
                                                    warmup=1, output="r.json")  # whole-chunk runs unchanged
    with pytest.raises(UserError, match="stream-frames must be >= 1"):
        android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=5, warmup=1, output="r.json",
                          stream_frames=0)
    extras = _kotlin_consts(SRC / "BenchConfig.kt")
    assert (extras["STREAM_FRAMES"], extras["TRIM"]) == ("stream_frames", "trim")
    config = (SRC / "BenchConfig.kt").read_text()
    assert "getIntExtra(Extra.STREAM_FRAMES, 0)" in config and "getIntExtra(Extra.TRIM, 1)" in config


def test_stream_request_trim_and_clip_latents(tmp_path):
    import numpy as np
    import torch

    from turbo_vaed.latents_io import save_latents

    stream_art = android.check_artifact(BenchOptions(artifact=_artifact(tmp_path, "s.pte", stream=True)))
    whole = android.check_artifact(BenchOptions(artifact=_artifact(tmp_path)))
    assert android.stream_request(BenchOptions(), stream_art) == 21
    assert android.stream_request(BenchOptions(extra={"stream": True, "stream_frames": 9}), stream_art) == 9
    assert android.stream_request(BenchOptions(), whole) is None
    with pytest.raises(UserError, match="wan-256p.pte is a whole-chunk artifact: export it with .*--stream"):
        android.stream_request(BenchOptions(extra={"stream": True}), whole)
    assert stream_trims(stream_art.manifest, 16) is True
    cog = {**stream_art.manifest, "family": "cogvideox"}
    assert (stream_trims(cog, 5), stream_trims(cog, 16)) == (True, False)
    z = torch.randn(1, 16, 7, 4, 4)
    src = save_latents(tmp_path / "clip.safetensors", z, "wan")
    raw, frames = android.write_clip_latents_f32(src, [16, 4, 4], tmp_path / "clip.f32")
    assert frames == 7
    assert np.array_equal(np.frombuffer(raw.read_bytes(), "<f4").reshape(7, 16, 4, 4), z[0].permute(1, 0, 2, 3).numpy())
    with pytest.raises(UserError, match=r"a clip for the artifact is \(1, 16, T, 8, 8\)"):
        android.write_clip_latents_f32(src, [16, 8, 8], tmp_path / "bad.f32")
    bench = (SRC / "Bench.kt").read_text()
    assert "readClipLatents" in bench and "latentFrameNumel" in bench  # the app takes T from the file's size


def _start_extras(start: list[str]) -> dict[str, str]:
    return {start[i + 1]: start[i + 2] for i, tok in enumerate(start) if tok in ("--es", "--ei")}


def test_bench_android_streams_with_fake_adb(cli, tmp_path, fake_adb):
    art = _artifact(tmp_path, "wan-stream.pte", stream=True)
    (tmp_path / "device-result.json").write_text(json.dumps(_sample_stream_doc()))
    out = tmp_path / "stream.json"
    res = cli("bench", "--device", "android", art, "--json", out)
    assert res.code == 0, res.err
    start = next(c for c in fake_adb() if c[2:5] == ["shell", "am", "start"])
    extras = _start_extras(start)
    assert (extras["stream_frames"], extras["trim"]) == ("21", "1")  # a streaming artifact streams by itself
    assert load_results(out)["results"][0]["stream"]["latent_frames"] == 21
    assert "streaming a clip of 21 latent frames" in res.err


def test_bench_android_stream_latents_set_the_clip(tmp_path, fake_adb, monkeypatch):
    import torch

    from turbo_vaed.latents_io import save_latents

    art = _artifact(tmp_path, "wan-stream.onnx", "onnx", stream=True)
    src = save_latents(tmp_path / "clip.safetensors", torch.randn(1, 16, 5, 4, 4), "wan")
    (tmp_path / "device-result.json").write_text(json.dumps(_sample_stream_doc(clip=5)))
    opts = BenchOptions(device="android", artifact=art, latents=src, extra={"stream": True, "stream_frames": 21})
    doc = android.bench_android(opts)
    calls = fake_adb()
    extras = _start_extras(next(c for c in calls if c[2:5] == ["shell", "am", "start"]))
    assert extras["stream_frames"] == "5" and extras["latents"] == "/data/local/tmp/turbovaed/wan-stream.latents.f32"
    assert doc["results"][0]["stream"]["frames"] == 17
    # a result that is not the clip asked for (an old APK without streaming) is an error
    (tmp_path / "device-result.json").write_text(json.dumps(_sample_doc()))
    with pytest.raises(UserError, match="streamed None latent frames, asked for a clip of 21"):
        android.bench_android(BenchOptions(device="android", artifact=art))
    with pytest.raises(UserError, match="whole-chunk artifact"):
        android.bench_android(BenchOptions(device="android", artifact=_artifact(tmp_path), extra={"stream": True}))


# ---------------------------------------------------------------- streaming protocol v2


def test_kotlin_knows_every_control_and_v2_field():
    consts = _kotlin_consts(SRC / "ModelManifest.kt")
    controls = {k: v for k, v in consts.items() if k.endswith("_INPUT")}
    assert set(controls.values()) == set(CONTROLS)
    src = (SRC / "ModelManifest.kt").read_text()
    known = re.search(r"KNOWN_CONTROLS = listOf\(([^)]*)\)", src).group(1)
    assert [controls[c.strip()] for c in known.split(",")] == list(CONTROLS)
    assert "DEFAULT_CONTROLS = listOf(FIRST_INPUT, TRIM_INPUT)" in src  # absent controls: v1
    value = _function_text(SRC / "ModelManifest.kt", "controlValue")
    for name in controls:  # every control has a value per chunk
        assert f"StreamSpec.{name} ->" in value
    parse = _function_text(SRC / "ModelManifest.kt", "parseStream") + _function_text(SRC / "ModelManifest.kt",
                                                                                      "parseRestartAt")
    for key in V2_FIELDS:  # read (absent or null: v1) and validated with one-line errors
        assert f'"{key}"' in parse and f"stream.{key}" in parse
    assert "does not know" in parse and "twice" in parse and "is neither the latents" in parse
    assert "valid.shape[0] != perChunk.toLong()" in parse
    assert "intValue(" in _function_text(SRC / "ModelManifest.kt", "intOrNull")
    assert "is Int ->" in _function_text(SRC / "ModelManifest.kt", "intValue")  # 1.5 is not a flush count
    plan = _function_text(SRC / "ModelManifest.kt", "plan")
    assert "segments(clipLatentFrames)" in plan and "repeat(maxOf(flushChunks, 0))" in plan and "flush = true" in plan
    assert "validOutput == null" in plan  # the v1 counts only without a valid output
    assert "> 0.5f" in _function_text(SRC / "ModelManifest.kt", "validRows")
    bench = _function_text(SRC / "Bench.kt", "measureStream")
    assert "if (c.first) runner.reset()" in bench  # every segment starts from the initial states
    assert "c.controlValue(name)" in bench and "runner.step(chunk, controls)" in bench
    assert "StreamSpec.validRows(" in bench and "spec.controls" in bench
    runners = (SRC / "Runners.kt").read_text()
    assert runners.count("fun step(latents: FloatArray, controls: FloatArray): StepOutput") == 3  # interface + 2
    assert "FIRST_INPUT" not in runners and "TRIM_INPUT" not in runners  # controls by the manifest's names only
    executorch = runners.split("class ExecuTorchStreamRunner")[1].split("class OrtStreamRunner")[0]
    assert "controlBuffers" in executorch and "outputs[validIndex].toTensor().getDataAsFloatArray()" in executorch
    ort = runners.split("class OrtStreamRunner")[1].split("class ExecuTorchRunner")[0]
    assert "spec.controls.withIndex()" in ort and "spec.validOutput" in ort and "floatBuffer" in ort


def test_v2_artifact_manifest_and_loop(tmp_path):
    """A v2 streaming manifest passes the driver's checks; the loop both apps run keeps its valid frames."""
    art = android.check_artifact(BenchOptions(artifact=_artifact(tmp_path, "v2.onnx", "onnx", v2={})))
    stream = art.manifest["stream"]
    assert [t["name"] for t in art.manifest["inputs"]] == ["latents", "first", "start", "remaining", "state0",
                                                           "state1"]
    assert [t["name"] for t in art.manifest["outputs"]] == ["frames", "valid", "state0_next", "state1_next"]
    assert android.stream_request(BenchOptions(), art) == 21
    assert app_stream(stream, lagging_step(stream), np_zeros(21), True) == (11 + 1, 81)
    restarted = {**stream, "restart_at": [8, 16]}
    assert app_stream(restarted, lagging_step(restarted), np_zeros(21), True) == (4 + 1 + 4 + 1 + 3 + 1, 75)
    assert app_stream(restarted, lagging_step(restarted), np_zeros(21), True) == reference_stream(
        restarted, lagging_step(restarted), np_zeros(21), True)


def np_zeros(t: int):
    import numpy as np

    return np.zeros((t, 1, 1, 1), np.float32)


def test_kotlin_restart_at_segments_and_trims():
    """restart_at: a list of latent indices (> 0, strictly increasing), the clip cut at each one below its length
    (as the Swift app and turbo_vaed.streaming.segments); one trim flag per segment, or one for all."""
    model = (SRC / "ModelManifest.kt").read_text()
    assert "restartAt: List<Int> = emptyList()" in model and "restart_every" not in model
    assert "restartEvery" not in model and "TOTAL_INPUT" not in model and '"total"' not in model
    segments = _function_text(SRC / "ModelManifest.kt", "segments")
    assert "restartAt.filter { it in 1 until clipLatentFrames }" in segments and "zipWithNext()" in segments
    assert "step" not in segments  # cut at the listed indices, never periodically
    restart = _function_text(SRC / "ModelManifest.kt", "parseRestartAt")
    assert 'isNull("restart_at")' in restart and 'optJSONArray("restart_at")' in restart and "intValue(" in restart
    assert "is Int ->" in _function_text(SRC / "ModelManifest.kt", "intValue")  # 2.5 is not a latent index
    parse = _function_text(SRC / "ModelManifest.kt", "parseStream")
    assert "parseRestartAt(s, source)" in parse and "strictly increasing" in parse and "b <= a" in parse
    plan = _function_text(SRC / "ModelManifest.kt", "plan")
    assert "fun plan(clipLatentFrames: Int, trims: List<Boolean>)" in plan
    assert "trims.size != 1 && trims.size != all.size" in plan and "one per segment" in plan
    assert "if (trims.size == 1) trims[0] else trims[number]" in plan
    from turbo_vaed.streaming import segments as reference

    for restart_at in ((), (21,), (8, 16), (3, 5, 13), (20, 40)):  # the rule the Kotlin source states
        for clip in (1, 5, 21, 45):
            assert app_segments({"restart_at": list(restart_at)}, clip) == reference(clip, restart_at)


def test_start_command_line_per_segment_trims():
    """--ei trim 0|1 for one flag; --es trim 1,0,... with one flag per segment (restart_at), read by the app."""
    cmd = android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=5, warmup=1, output="r.json",
                            stream_frames=21, trim=(False, False, True))
    assert cmd[-6:] == ["--ei", "stream_frames", "21", "--es", "trim", "0,0,1"]
    for one in (True, (True,)):
        assert android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=5, warmup=1,
                                 output="r.json", stream_frames=21, trim=one)[-3:] == ["--ei", "trim", "1"]
    with pytest.raises(UserError, match="one per segment"):
        android.start_cmd("adb", "S", model="/m.pte", runtime="executorch", iters=5, warmup=1, output="r.json",
                          stream_frames=21, trim=[])
    consts = _kotlin_consts(SRC / "BenchConfig.kt")
    assert consts["TRIM"] == "trim" and "TRIM_LAST" not in consts
    config = (SRC / "BenchConfig.kt").read_text()
    parse = _function_text(SRC / "BenchConfig.kt", "parseTrims")
    assert "intent.getStringExtra(Extra.TRIM)" in parse and "getIntExtra(Extra.TRIM, 1)" in parse
    assert 'split(",")' in parse and "listOf(trim == 1)" in parse
    assert "val trims = parseTrims(intent)" in config and "trims = trims," in config and "trimLast" not in config
    from turbo_vaed.bench import ios, options

    assert android.stream_segment_trims is ios.stream_segment_trims is options.stream_segment_trims  # one copy
    assert android.stream_segment_trims({"family": "cogvideox", "stream": {"restart_at": [8, 16]}}, 21) == (
        False, False, True)
    assert android.stream_segment_trims({"family": "wan", "stream": {"restart_at": []}}, 21) == (True,)


def test_bench_android_streams_v2_with_fake_adb(cli, tmp_path, fake_adb):
    """restart_at with segments whose trim rules differ (cogvideox: 8 even, 5 odd) -> --es trim 0,0,1."""
    art = _artifact(tmp_path, "cog-stream.pte", v2={"restart_at": [8, 16]})
    manifest_path = art.with_name("cog-stream.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["family"] = "cogvideox"
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "device-result.json").write_text(json.dumps(_sample_stream_doc()))
    res = cli("bench", "--device", "android", art, "--json", tmp_path / "v2.json")
    assert res.code == 0, res.err
    start = next(c for c in fake_adb() if c[2:5] == ["shell", "am", "start"])
    extras = _start_extras(start)
    assert (extras["stream_frames"], extras["trim"]) == ("21", "0,0,1")
    assert start[start.index("trim") - 1] == "--es"  # a list: a string extra
    assert "trim 0,0,1" in res.err


# ---------------------------------------------------------------- ONNX Runtime streaming: states bound in place


class _Members(dict):
    def __missing__(self, key):
        raise AssertionError(f"no {key!r} in the class (members: {sorted(self)})")


def _code(node) -> str:
    """The source of ``node`` with its comments left out."""
    text, start = node.text, node.start_byte
    cuts = sorted((n.start_byte - start, n.end_byte - start) for n in _walk(node)
                  if n.type in ("line_comment", "block_comment", "comment"))
    out, pos = [], 0
    for a, b in cuts:
        if a >= pos:
            out.append(text[pos:a])
            pos = b
    out.append(text[pos:])
    return b"".join(out).decode()


def _kotlin_class(path: Path, name: str) -> _Members:
    """Class ``name`` of ``path``, comments left out: each function by name, its ``init`` blocks ("init") and the
    whole class ("")."""
    tree = _parser().parse(path.read_bytes())
    for cls in _walk(tree.root_node):
        if cls.type == "class_declaration" and any(c.type in ("type_identifier", "identifier")
                                                   and c.text.decode() == name for c in cls.children):
            body = next(c for c in cls.children if c.type == "class_body")
            members = _Members({"": _code(cls), "init": ""})
            for m in body.children:
                if m.type == "anonymous_initializer":
                    members["init"] += _code(m)
                elif m.type == "function_declaration":
                    fn = next(c.text.decode() for c in m.children if c.type == "identifier")
                    members[fn] = _code(m)
            return members
    raise AssertionError(f"no class {name} in {path.name}")


def _host_run_in_place() -> str:
    """The host runner's ``OrtRunner._run_in_place`` (turbo_vaed/targets/onnx.py), read without importing it."""
    import ast

    path = ROOT / "turbo_vaed" / "targets" / "onnx.py"
    text = path.read_text()
    fn = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef) and n.name == "_run_in_place")
    return ast.get_source_segment(text, fn)


# why one buffer per state is safe (the host runner's docstring, cited by the Kotlin runner's)
IN_PLACE_REASON = "every node that reads a state input runs before the node that writes its next value"


def test_ort_stream_runner_binds_next_states_in_place():
    """Every next-state output is a pinned output of the state input's own tensor (one buffer per state, as the
    host's IOBinding does), so one copy of the states is alive; frames[, valid] stay ONNX Runtime's, per call."""
    ort = _kotlin_class(SRC / "Runners.kt", "OrtStreamRunner")
    step, init = ort["step"], ort["init"]
    # one run per call, with pinned outputs: run(inputs, requestedOutputs, pinnedOutputs), ONNX Runtime 1.16+
    assert re.findall(r"session\.run\(([^()]*)\)", step) == ["feeds, requested, pinned"]
    props = dict(line.split("=", 1) for line in (BENCH / "gradle.properties").read_text().splitlines()
                 if "=" in line and not line.lstrip().startswith("#"))
    assert tuple(int(x) for x in props["onnxruntimeVersion"].split(".")[:2]) >= (1, 16), props["onnxruntimeVersion"]
    # each next state pinned to the tensor fed as that state (the same buffer: no ping-pong pair), never requested
    assert "pinned = spec.states.associate { st -> st.next to owned.getValue(st.name).second }" in init
    assert "feeds = owned.mapValues { it.value.second }" in init
    assert "requested = manifest.outputs.map { it.name }.filterTo(LinkedHashSet<String>()) { it !in pinned }" in init
    # the next state must fit its state's buffer: same dtype (parseStream checks the shapes), frames never pinned
    check = ort["unbindableState"]
    assert "next.dtype != input.dtype" in check and "st.next == manifest.outputs[0].name" in check
    assert "unbindableState()" in init
    # frames[, valid]: ONNX Runtime's, read and closed with the call's result; no result kept open for the states
    assert "session.run(feeds, requested, pinned).use { result ->" in step
    assert "manifest.outputs[0].name" in step and "spec.validOutput" in step
    assert "previous" not in ort[""] and "prev." not in ort[""]
    # the host runner's design: each next state's output bound to its own state input's buffer (IOBinding)
    host = _host_run_in_place()
    assert "a = feeds[self._state_of[name]]" in host
    assert 'io.bind_output(name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)' in host
    assert IN_PLACE_REASON in " ".join(host.split())
    runners = (SRC / "Runners.kt").read_text()
    kdoc = runners.split("\nclass OrtStreamRunner")[0].rsplit("/**", 1)[1]
    kdoc = " ".join(" ".join(line.strip().lstrip("*/") for line in kdoc.splitlines()).split())
    assert "_run_in_place" in kdoc and IN_PLACE_REASON in kdoc and "no ping-pong" in kdoc
    # the streamed result says so (a note of the free-form notes string; the schema unchanged)
    bench = _function_text(SRC / "Bench.kt", "measureStream")
    assert re.search(r'if \(runner\.runtimeName == "onnxruntime"\) \{[^}]*add\("states bound in place', bench)


def test_ort_stream_runner_allocates_states_once_and_closes_them():
    """The state buffers and tensors are made when the runner loads, set back to their init values on reset (after
    a call changed them), never made per call, and closed with the runner (a Result never closes a pinned output)."""
    ort = _kotlin_class(SRC / "Runners.kt", "OrtStreamRunner")
    allocations = ("HostBuffer(", "onnxTensor(", "createTensor(", "allocateDirect(")
    # one direct buffer and one tensor per input (the states included), made in init and nowhere else
    assert [a for a in allocations if a in ort["init"]] == ["HostBuffer(", "onnxTensor("]
    assert [ort[""].count(a) for a in allocations] == [1, 1, 0, 0]
    assert "owned = manifest.inputs.associate {" in ort["init"]
    # no call allocates tensors or input maps: the same feeds, requested and pinned every call
    for fn in ("step", "reset"):
        made = [a for a in (*allocations, "HashMap", "mapOf(", "associate", "LinkedHashSet") if a in ort[fn]]
        assert not made, f"{fn} makes {made}"
    # reset writes the initial values into the same buffers, only once a call has written the states
    assert "if (dirty) initializeStates(fresh = false)" in ort["reset"]
    assert "dirty = true" in ort["step"] and "session.run(" in ort["step"].split("dirty = true", 1)[1]
    init_states = ort["initializeStates"]
    assert "for ((buffer, value) in initial)" in init_states and "buffer.fill(value)" in init_states
    assert "dirty = false" in init_states and "initializeStates(fresh = true)" in ort["init"]
    assert "checkNotNull(initialValue(st))" in ort["init"] and '"zeros" -> 0f' in ort["initialValue"]
    # a reset of a 0.9 GB state: bulk copies, not one element at a time
    fill = _kotlin_class(SRC / "Runners.kt", "HostBuffer")["fill"]
    assert "floats.put(values, 0, m)" in fill and "shorts.put(bits, 0, m)" in fill and "until spec.numel" not in fill
    # close closes every owned tensor, the pinned states' included; nothing else closes them
    assert "for ((_, tensor) in owned.values) tensor.close()" in ort["close"]
    assert "session.close()" in ort["close"] and "options.close()" in ort["close"]
    for fn in ("step", "reset"):
        assert "tensor.close()" not in ort[fn] and "session.close()" not in ort[fn]
