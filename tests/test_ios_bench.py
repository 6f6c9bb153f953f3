"""ios_bench (Swift) and `turbovaed bench --device iphone16pro`: everything that can be checked without a Mac.

- every Swift file parses (tree-sitter-swift) and the Codable keys it encodes are the turbovaed.bench/1 keys;
- names shared by the Swift code, project.yml and the Python driver agree;
- the xcodebuild / devicectl / simctl command lines;
- the whole driver flow against a fake Xcode (simulator and device), and its error paths;
- streaming artifacts (export --stream): the Swift manifest reader knows every field of the exporter's ``stream``
  section, the launch arguments, a streamed results JSON as the app writes it, the driver flow;
- streaming protocol v2 (``stream.controls``, ``valid_output``, ``flush_chunks``, ``restart_at``): the Swift
  reader and loop handle every field, and the app's loop, simulated here (``app_stream``) against tiny numpy and
  torch steps, keeps the frames the reference loop does;
- off macOS: exit 2 with one line.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import turbo_vaed
from turbo_vaed.bench import ios
from turbo_vaed.bench.options import COMPUTE_UNITS, stream_trims
from turbo_vaed.bench.schema import schema, validate_results
from turbo_vaed.errors import UserError

IOS_DIR = Path(__file__).resolve().parents[1] / "ios_bench"
LIB_DIR = IOS_DIR / "Sources" / "TurboVAEDBench"
FIXTURES = IOS_DIR / "Tests" / "TurboVAEDBenchTests" / "Fixtures"
TINY = FIXTURES / "tiny.mlpackage"
TINY_MANIFEST = json.loads((FIXTURES / "tiny.manifest.json").read_text())
TINY_STREAM = FIXTURES / "tiny-stream.mlpackage"
TINY_STREAM_MANIFEST = json.loads((FIXTURES / "tiny-stream.manifest.json").read_text())
TINY_STREAM_V2 = FIXTURES / "tiny-stream-v2.mlpackage"
TINY_STREAM_V2_MANIFEST = json.loads((FIXTURES / "tiny-stream-v2.manifest.json").read_text())
V2_FIELDS = ("controls", "valid_output", "flush_chunks", "restart_at")  # the stream section's protocol-v2 fields
CONTROLS = ("first", "trim", "start", "remaining")  # every control input both harnesses can feed
# stream section keys that only describe the loop in words (the apps do not read them)
# read by people, not by the loop (memory_estimate: the app's budget per call, fp16 and fp32)
DESCRIPTIVE = {"flags", "tail", "first_chunk", "coreml_states", "notes", "restart", "memory_estimate"}

# ------------------------------------------------------------------------------------ Swift source parsing


def _parser():
    import tree_sitter
    import tree_sitter_swift

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))


def _parse(path: Path):
    return _parser().parse(path.read_bytes()).root_node


def _bad_nodes(node) -> list[str]:
    bad = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "ERROR" or n.is_missing:
            bad.append(f"{n.type} at line {n.start_point[0] + 1}: {n.text.decode(errors='replace')[:60]!r}")
        stack.extend(n.children)
    return bad


SWIFT_FILES = sorted(IOS_DIR.rglob("*.swift"))


def test_swift_tree_is_complete():
    names = {p.relative_to(IOS_DIR).as_posix() for p in SWIFT_FILES}
    for expected in ("Package.swift", "Sources/TurboVAEDBench/BenchResults.swift",
                     "Sources/TurboVAEDBench/BenchmarkRunner.swift", "Sources/TurboVAEDBench/ComputePlanSummary.swift",
                     "Sources/TurboVAEDBench/StreamLoop.swift", "Tests/TurboVAEDBenchTests/StreamingTests.swift",
                     "Sources/TurboVAEDBenchCLI/main.swift", "App/TurboVAEDBenchApp.swift", "App/ContentView.swift",
                     "Tests/TurboVAEDBenchTests/PredictionPerformanceTests.swift"):
        assert expected in names
    assert (IOS_DIR / "project.yml").is_file() and (IOS_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", SWIFT_FILES, ids=lambda p: p.relative_to(IOS_DIR).as_posix())
def test_swift_file_parses(path):
    root = _parse(path)
    assert root.type == "source_file"
    assert _bad_nodes(root) == [], f"{path.name} has syntax errors"


def _type_of(node) -> dict:
    """A Swift type node as {'kind': optional|array|dict|named, ...}."""
    if node.type == "type_annotation":
        node = next(c for c in node.children if c.is_named)
    if node.type == "optional_type":
        inner = next(c for c in node.children if c.is_named)
        return {**_type_of(inner), "optional": True}
    if node.type == "array_type":
        return {"kind": "array", "item": _type_of(next(c for c in node.children if c.is_named)), "optional": False}
    if node.type == "dictionary_type":
        return {"kind": "dict", "optional": False}
    return {"kind": "named", "name": node.text.decode(), "optional": False}


def _codable_structs(path: Path) -> dict[str, dict]:
    """struct name -> {'props': {name: type}, 'keys': {property: JSON key}} for Codable/Encodable structs."""
    out = {}
    stack = [_parse(path)]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "class_declaration" or node.child_by_field_name("declaration_kind") is None:
            continue
        if node.child_by_field_name("declaration_kind").text.decode() != "struct":
            continue
        inherits = {c.text.decode() for c in node.children if c.type == "inheritance_specifier"}
        if not inherits & {"Codable", "Encodable"}:
            continue
        body = node.child_by_field_name("body")
        props, coding = {}, None
        for member in body.children:
            if member.type == "property_declaration":
                modifiers = " ".join(c.text.decode() for c in member.children if c.type == "modifiers")
                if "static" in modifiers or any(c.type == "computed_property" for c in member.children):
                    continue
                name = member.child_by_field_name("name").text.decode()
                annotation = next(c for c in member.children if c.type == "type_annotation")
                props[name] = _type_of(annotation)
            elif member.type == "class_declaration" and \
                    member.child_by_field_name("name").text.decode() == "CodingKeys":
                coding = {}
                for entry in member.child_by_field_name("body").children:
                    if entry.type != "enum_entry":
                        continue
                    names = [c.text.decode() for c in entry.children if c.type == "simple_identifier"]
                    raw = [c for c in entry.children if c.type == "line_string_literal"]
                    if raw:
                        assert len(names) == 1, "a raw value belongs to one case"
                        coding[names[0]] = raw[0].text.decode().strip('"')
                    else:
                        coding.update({n: n for n in names})
        if coding is not None:
            assert set(coding) == set(props), f"{node.child_by_field_name('name').text.decode()}: CodingKeys " \
                f"must list every stored property: {sorted(set(props) ^ set(coding))}"
            keys = coding
        else:
            keys = {p: p for p in props}
        out[node.child_by_field_name("name").text.decode()] = {"props": props, "keys": keys}
    return out


def _resolve(sub: dict) -> dict:
    if "$ref" in sub:
        node = schema()
        for part in sub["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return node
    return sub


def _types(sub: dict) -> set[str]:
    t = sub.get("type", [])
    types = {t} if isinstance(t, str) else set(t)
    if "enum" in sub or "const" in sub:
        values = sub.get("enum", [sub.get("const")])
        types |= {"string" for v in values if isinstance(v, str)}
    return types - {"null"}


SCALARS = {"Int": {"integer", "number"}, "Double": {"number"}, "String": {"string"}, "Bool": {"boolean"}}


def _check_struct(structs: dict, name: str, sub: dict, where: str, seen: set[str]) -> None:
    sub = _resolve(sub)
    seen.add(name)
    struct = structs[name]
    props = sub["properties"]
    json_keys = {struct["keys"][p]: p for p in struct["props"]}
    assert set(json_keys) == set(props), f"{where} ({name}): Swift keys {sorted(json_keys)} != schema {sorted(props)}"
    for key in sub.get("required", []):
        assert not struct["props"][json_keys[key]]["optional"], f"{where}.{key} is required: must not be Optional"
    for key, prop in json_keys.items():
        swift_type = struct["props"][prop]
        schema_sub = _resolve(props[key])
        if swift_type["kind"] == "array":
            assert "array" in _types(schema_sub), f"{where}.{key}: Swift array, schema {schema_sub.get('type')}"
            swift_type, schema_sub = swift_type["item"], _resolve(schema_sub["items"])
        if swift_type["kind"] == "dict":
            assert "object" in _types(schema_sub) and "properties" not in schema_sub, f"{where}.{key}"
        elif swift_type["name"] in structs:
            assert "object" in _types(schema_sub), f"{where}.{key} is an object in Swift"
            _check_struct(structs, swift_type["name"], schema_sub, f"{where}.{key}", seen)
        else:
            allowed = SCALARS.get(swift_type["name"])
            assert allowed, f"{where}.{key}: unexpected Swift type {swift_type['name']}"
            assert _types(schema_sub) & allowed, f"{where}.{key}: Swift {swift_type['name']} vs schema {schema_sub}"


def test_codable_keys_are_exactly_the_schema_keys():
    structs = _codable_structs(LIB_DIR / "BenchResults.swift")
    seen: set[str] = set()
    _check_struct(structs, "BenchDocument", schema(), "(document)", seen)
    assert seen == {"BenchDocument", "ToolInfo", "Comparison", "BenchResult", "BenchDevice", "BenchRuntime",
                    "BenchModel", "BenchSettings", "ColdStart", "LatencySummary", "ThermalReading", "StreamSummary",
                    "ChunkLatencySummary"}
    # the check itself catches drift: a renamed key fails it
    broken = {k: {**v, "keys": dict(v["keys"])} for k, v in structs.items()}
    broken["ColdStart"]["keys"]["loadMs"] = "load_time_ms"
    with pytest.raises(AssertionError):
        _check_struct(broken, "BenchDocument", schema(), "(document)", set())


def _swift(name: str) -> str:
    return (LIB_DIR / name).read_text()


def test_swift_constants_agree_with_schema_and_python():
    s = schema()
    kinds = set(s["$defs"]["result"]["properties"]["device"]["properties"]["kind"]["enum"])
    probe = _swift("DeviceProbe.swift")
    default_kinds = set(re.findall(r'return "([a-z0-9-]+)"', probe.split("defaultKind")[1].split("}")[0]))
    assert default_kinds == {"ios-simulator", "mac", "iphone16pro"} and default_kinds <= kinds
    arg_kinds = set(re.findall(r'"([a-z0-9-]+)"', _swift("BenchArguments.swift").split("deviceKinds: Set<String> =")[1]
                               .split("\n")[0]))
    assert arg_kinds == default_kinds
    units = re.findall(r"^\s+case (\w+)$", _swift("ComputeUnitsOption.swift"), re.M)
    assert tuple(units) == COMPUTE_UNITS
    top = _swift("TurboVAEDBench.swift")
    assert re.search(r'version = "([^"]+)"', top).group(1) == turbo_vaed.__version__
    assert re.search(r'toolName = "([^"]+)"', top).group(1) in s["properties"]["tool"]["properties"]["name"]["enum"]
    assert re.search(r'schemaID = "([^"]+)"', top).group(1) == s["properties"]["schema"]["const"]
    runtime = re.search(r'init\(name: String = "(\w+)"', _swift("BenchResults.swift")).group(1)
    runtime_names = s["$defs"]["result"]["properties"]["runtime"]["properties"]["name"]["enum"]
    assert runtime == "coreml" and runtime in runtime_names
    runner = _swift("BenchmarkRunner.swift")
    assert '"student/coreml-\\(units.rawValue)"' in runner  # labels are unique per compute units
    assert "no Neural Engine" in runner  # the simulator note ios.parse_app_results looks for
    assert 'appendingPathExtension("error")' in _swift("ResultsIO.swift")  # AppRun.error
    plan_devices = set(re.findall(r'return "(\w+)"', _swift("ComputePlanSummary.swift").split("func deviceName")[1]))
    assert plan_devices == {"cpu", "gpu", "neural_engine", "unknown"}
    mac = pytest.importorskip("turbo_vaed.bench.mac")  # --device mac (coremltools) names devices the same way
    names = mac.summarise_plan([("a", "MLCPUComputeDevice"), ("b", "MLGPUComputeDevice"),
                                ("c", "MLNeuralEngineComputeDevice"), ("d", None)])
    assert {dev for counts in names.values() for dev in counts} == plan_devices
    assert ios.AppRun("x", "m.mlpackage").error.endswith(".json.error")


def test_python_driver_names_match_the_xcode_project():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((IOS_DIR / "project.yml").read_text())
    assert spec["name"] == ios.PROJECT
    app = spec["targets"][ios.SCHEME]
    assert app["settings"]["base"]["PRODUCT_BUNDLE_IDENTIFIER"] == ios.BUNDLE_ID
    assert app["settings"]["base"]["PRODUCT_NAME"] + ".app" == ios.APP_PRODUCT
    assert app["platform"] == "iOS" and spec["options"]["deploymentTarget"]["iOS"] == "17.0"
    assert ios.SCHEME in spec["schemes"]
    package = (IOS_DIR / "Package.swift").read_text()
    assert f'.executable(name: "{ios.SWIFT_PRODUCT}"' in package
    assert "swift-tools-version:5.10" in package and ".iOS(.v17), .macOS(.v14)" in package
    # every flag the driver passes is one the Swift parser knows
    names = set(re.findall(r'"(\w+)"', _swift("BenchArguments.swift").split("names: Set<String> = [")[1].split("]")[0]))
    run = ios.AppRun("r1", "m.mlpackage", ("all", "cpuOnly"), latents="z.npy")
    flags = {a[1:] for a in run.launch_arguments() if a.startswith("-") and a[1:].isalpha()}
    assert flags == {"model", "computeUnits", "warmup", "iters", "output", "latents", "deviceKind", "exitWhenDone"}
    assert flags <= names


def test_fixture_matches_its_manifest():
    """The tiny Core ML fixture the Swift tests run is what its manifest says (checked with coremltools)."""
    ct = pytest.importorskip("coremltools")
    spec = ct.utils.load_spec(str(TINY))
    (inp,), (out,) = spec.description.input, spec.description.output
    assert (inp.name, list(inp.type.multiArrayType.shape)) == ("latents", TINY_MANIFEST["inputs"][0]["shape"])
    assert (out.name, TINY_MANIFEST["outputs"][0]["shape"]) == ("frames", [5, 3, 16, 16])
    assert inp.type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    assert TINY_MANIFEST["size_bytes"] == sum(p.stat().st_size for p in TINY.rglob("*") if p.is_file())


def test_stream_fixture_matches_its_manifest():
    """The streaming stand-in the Swift tests run has the manifest's named inputs/outputs, in its order."""
    ct = pytest.importorskip("coremltools")
    from turbo_vaed.exporters.manifest import read_manifest

    manifest = read_manifest(FIXTURES / "tiny-stream.manifest.json")  # a valid turbovaed.manifest/2
    spec = ct.utils.load_spec(str(TINY_STREAM))
    fp16 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    got_in = [(i.name, list(i.type.multiArrayType.shape)) for i in spec.description.input]
    assert got_in == [(t["name"], t["shape"]) for t in manifest["inputs"]]
    assert [o.name for o in spec.description.output] == [t["name"] for t in manifest["outputs"]]
    assert all(i.type.multiArrayType.dataType == fp16 for i in spec.description.input)
    assert manifest["size_bytes"] == sum(p.stat().st_size for p in TINY_STREAM.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ results JSON


def streamed_frames(stream: dict, clip: int, trim: bool) -> tuple[int, int]:
    """(chunks, frames) of a clip streamed by turbo_vaed.streaming.run_stream (the reference loop)."""
    from turbo_vaed.streaming import run_stream

    k, per = stream["chunk_latent_frames"], stream["frames_per_chunk"]
    calls = []

    def call(feeds):
        calls.append(feeds)
        return [np.zeros((per, 1, 1, 1), np.float32), *(np.zeros(s["shape"], np.float32) for s in stream["states"])]

    frames = sum(f.shape[0] for f in run_stream(call, stream, np.zeros((clip, 1, 1, 1), np.float32), trim))
    assert len(calls) == -(-clip // k)
    return len(calls), frames


def app_segments(stream: dict, clip: int) -> list[tuple[int, int]]:
    """StreamSpec.segments (Swift and Kotlin): [0, clip) cut at every ``restart_at`` index below ``clip``."""
    cuts = [0, *(i for i in stream.get("restart_at") or () if 0 < i < clip), clip]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def app_plan(stream: dict, clip: int, trim) -> list[dict]:
    """The predictions the app plans for a clip (StreamPlan.chunks in StreamLoop.swift, StreamSpec.plan in
    ModelManifest.kt): per segment (the clip cut at ``restart_at``) its chunks of k latent frames, then
    ``flush_chunks`` more of the last chunk's latents; ``trim``: one flag for every segment, or one per segment."""
    k, per = stream["chunk_latent_frames"], stream["frames_per_chunk"] // stream["chunk_latent_frames"]
    segments = app_segments(stream, clip)
    trims = [trim] if isinstance(trim, bool) else list(trim)
    assert len(trims) in (1, len(segments)), "the apps refuse another count (one value, or one per segment)"
    out: list[dict] = []
    for number, (a, b) in enumerate(segments):
        total = b - a
        seg_trim = trims[0] if len(trims) == 1 else trims[number]
        offset = 0
        while offset < total:
            n, first = min(k, total - offset), offset == 0
            kept = None if stream.get("valid_output") else max(n * per - (stream["first_chunk_skip"] if first and
                                                                           seg_trim else 0), 0)
            out.append({"segment": number, "start": a + offset, "n": n, "first": first, "trim": first and seg_trim,
                        "kept": kept, "offset": offset, "total": total, "flush": False})
            offset += k
        for _ in range(stream.get("flush_chunks") or 0):
            out.append({**out[-1], "first": False, "trim": False, "kept": None, "offset": offset, "flush": True})
            offset += k
    return out


def control_value(chunk: dict, name: str) -> float:
    """StreamChunk.controlValue (Swift and Kotlin)."""
    return {"first": float(chunk["first"]), "trim": float(chunk["trim"]), "start": float(chunk["offset"]),
            "remaining": float(chunk["total"] - chunk["offset"])}[name]


def app_stream(stream: dict, call, latents: np.ndarray, trim) -> tuple[int, int]:
    """(predictions, kept frames) of the app's loop (StreamFeeder + measureStream) over ``call``: zero states at
    each segment start, controls by name, kept rows by ``valid_output`` or the v1 counts."""
    controls = stream.get("controls") or ["first", "trim"]
    valid = stream.get("valid_output")
    plan = app_plan(stream, latents.shape[0], trim)
    kept, states = 0, {}
    for c in plan:
        if c["first"]:
            states = {s["name"]: np.zeros(s["shape"], np.float32) for s in stream["states"]}
        part = latents[[c["start"] + min(i, c["n"] - 1) for i in range(stream["chunk_latent_frames"])]]
        feeds = {"latents": part, **{n: np.full((1, 1, 1, 1), control_value(c, n), np.float32) for n in controls},
                 **states}
        outs = call(feeds)
        if valid:
            assert outs[1].size == stream["frames_per_chunk"]
            kept += int((outs[1].reshape(-1) > 0.5).sum())
        else:
            kept += c["kept"]
        states = {s["name"]: o for s, o in zip(stream["states"], outs[2 if valid else 1:], strict=True)}
    return len(plan), kept


def lagging_step(stream: dict):
    """A numpy streaming step of protocol v2 (the v2 fixture's rule): row r of a chunk is latent frame
    j = start - 1 + r // rt (the output lags one latent frame); valid where 0 <= j < start + remaining (the
    segment's length), except the first ``first_chunk_skip`` rows of latent frame 0 (unless a ``trim`` control says
    0), so a segment of L latent frames keeps 1 + rt (L - 1) frames (wan) when a flush chunk follows it. It checks
    it is fed exactly the section's controls and states, and zero states (the initial ones) only at a segment
    start (``start`` 0): its state outputs are ones."""
    k, fpc = stream["chunk_latent_frames"], stream["frames_per_chunk"]
    rt, skip = fpc // k, stream["first_chunk_skip"]
    rows = np.arange(fpc)
    names = {"latents", *(stream.get("controls") or ("first", "trim")), *(s["name"] for s in stream["states"])}
    segment = {"trims": True}  # the trim control of the segment's first chunk, remembered as a state would

    def call(feeds):
        assert set(feeds) == names, sorted(feeds)
        start = float(feeds["start"].item())
        total = start + float(feeds["remaining"].item())
        for st in stream["states"]:  # reset at each segment start, carried otherwise
            assert np.all(feeds[st["name"]] == (0.0 if start == 0 else 1.0)), (st["name"], start)
        if start == 0 and "trim" in feeds:
            segment["trims"] = float(feeds["trim"].item()) > 0.5
        j = start - 1 + rows // rt
        lead = (j == 0) & (rows % rt < skip) & segment["trims"]
        valid = ((j >= 0) & (j < total) & ~lead).astype(np.float32).reshape(fpc, 1, 1, 1)
        return [np.zeros((fpc, 1, 1, 1), np.float32), valid, *(np.ones(s["shape"], np.float32)
                                                                for s in stream["states"])]

    return call


def app_doc(args: list[str], kind: str, manifest: dict = TINY_MANIFEST) -> dict:
    """A results document shaped exactly like the one BenchmarkRunner writes for these launch arguments."""
    opts = dict(zip(args[::2], args[1::2], strict=False))
    if "-streamFrames" in opts:
        return stream_app_doc(opts, kind, manifest)
    t, c, h, w = manifest["inputs"][0]["shape"]
    frames = manifest["outputs"][0]["shape"][0]
    iters, warmup = int(opts["-iters"]), int(opts["-warmup"])
    results = []
    for i, units in enumerate(opts["-computeUnits"].split(",")):
        samples = [10.0 + i + 0.5 * k for k in range(iters)]
        p50 = float(np.percentile(samples, 50))
        notes = "random normal latents (seed 0), float16 input [2, 16, 2, 2]"
        if kind == "ios-simulator" and i == 0:
            notes += "; iOS simulator: no Neural Engine; Core ML runs on the Mac's CPU/GPU"
        results.append({
            "label": f"student/coreml-{units}",
            "device": {"kind": kind, "model": "iPhone17,1", "os": "iOS", "os_version": "18.2.0", "cpu": "A18 Pro",
                       "soc": "A18 Pro", "cpu_count": 6, "memory_bytes": 7_994_343_424},
            "runtime": {"name": "coreml", "version": "3402.4.1 (iOS 18.2.0)", "compute_units": units,
                        "precision": manifest["precision"]},
            "model": {"family": manifest["family"], "decoder": "student", "artifact": opts["-model"].split("/")[-1],
                      "artifact_bytes": manifest["size_bytes"], "preset": manifest["preset"],
                      "width": manifest["width"], "height": manifest["height"], "latent_shape": [1, c, t, h, w],
                      "output_frames": frames},
            "settings": {"warmup": warmup, "iterations": iters},
            "cold_start": {"load_ms": 812.5, "first_run_ms": 40.0},
            "latency_ms": {"min": min(samples), "p50": p50, "p90": float(np.percentile(samples, 90)),
                           "max": max(samples), "mean": float(np.mean(samples)), "samples": samples},
            "fps": frames / (p50 / 1000), "peak_memory_bytes": 50_000_000,
            "thermal": {"before": "nominal", "after": "nominal"},
            "compute_plan": {"ios17.conv": {"cpu" if units == "cpuOnly" else "neural_engine": 1}},
            "notes": notes,
        })
    return {"schema": "turbovaed.bench/1", "created": "2025-06-01T12:00:00Z",
            "tool": {"name": "ios_bench", "version": "0.1.0"}, "results": results}


def stream_app_doc(opts: dict, kind: str, manifest: dict) -> dict:
    """What BenchmarkRunner.measureStream writes: one streamed clip per compute-units setting."""
    stream = manifest["stream"]
    k, c, h, w = manifest["inputs"][0]["shape"]
    clip = int(opts["-streamFrames"])
    trims = [t == "YES" for t in opts.get("-trim", "YES").split(",")]  # BenchArguments: one, or one per segment
    trim = trims[0] if len(trims) == 1 else trims
    if any(stream.get(f) for f in V2_FIELDS):  # protocol v2: what the app's loop keeps from a lagging step
        chunks, frames = app_stream(stream, lagging_step(stream), np.zeros((clip, 1, 1, 1), np.float32), trim)
    else:
        chunks, frames = streamed_frames(stream, clip, trim)
    results = []
    for i, units in enumerate(opts["-computeUnits"].split(",")):
        samples = [20.0 + i + 0.25 * j for j in range(max(chunks - 1, 1))]
        lat = {"min": min(samples), "p50": float(np.percentile(samples, 50)), "p90": float(np.percentile(samples, 90)),
               "max": max(samples), "mean": float(np.mean(samples))}
        first, wall_s = 90.0 + i, (90.0 + i + sum(samples[: chunks - 1])) / 1000 + 0.002
        results.append({
            "label": f"student/coreml-{units}-stream",
            "device": {"kind": kind, "model": "iPhone17,1", "os": "iOS", "os_version": "18.2.0", "cpu": "A18 Pro",
                       "soc": "A18 Pro", "cpu_count": 6, "memory_bytes": 7_994_343_424},
            "runtime": {"name": "coreml", "version": "3402.4.1 (iOS 18.2.0)", "compute_units": units,
                        "precision": manifest["precision"]},
            "model": {"family": manifest["family"], "decoder": "student", "artifact": opts["-model"].split("/")[-1],
                      "artifact_bytes": manifest["size_bytes"], "preset": manifest["preset"],
                      "width": manifest["width"], "height": manifest["height"], "latent_shape": [1, c, clip, h, w],
                      "output_frames": frames},
            "settings": {"warmup": 0, "iterations": len(samples)},
            "cold_start": {"load_ms": 812.5, "first_run_ms": first},
            "latency_ms": {**lat, "samples": samples},
            "fps": stream["frames_per_chunk"] / (lat["p50"] / 1000), "peak_memory_bytes": 60_000_000,
            "thermal": {"before": "nominal", "after": "nominal"},
            "notes": f"streamed {clip} latent frames in {chunks} chunks of {k}",
            "stream": {"chunk_latent_frames": k, "latent_frames": clip, "frames": frames, "first_chunk_ms": first,
                       "steady_chunk_ms": lat, "sustained_fps": frames / wall_s},
        })
    return {"schema": "turbovaed.bench/1", "created": "2025-06-01T12:00:00Z",
            "tool": {"name": "ios_bench", "version": "0.1.0"}, "results": results}


def _keys(obj, prefix="") -> set[str]:
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(prefix + k)
            if not (prefix + k).endswith("compute_plan"):
                out |= _keys(v, f"{prefix}{k}.")
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        out |= _keys(obj[0], prefix)
    return out


def _swift_key_paths() -> set[str]:
    structs = _codable_structs(LIB_DIR / "BenchResults.swift")

    def walk(name, prefix):
        out = set()
        for prop, key in structs[name]["keys"].items():
            out.add(prefix + key)
            t = structs[name]["props"][prop]
            t = t["item"] if t["kind"] == "array" else t
            if t["kind"] == "named" and t["name"] in structs:
                out |= walk(t["name"], f"{prefix}{key}.")
        return out

    return walk("BenchDocument", "")


def test_sample_app_json_validates_and_parses():
    sample = json.loads((FIXTURES / "sample-results.json").read_text())  # also decoded by the Swift tests
    validate_results(sample, "sample-results.json")
    doc = ios.parse_app_results(FIXTURES / "sample-results.json", simulator=False)
    assert [r["runtime"]["compute_units"] for r in doc["results"]] == ["all", "cpuOnly"]
    assert _keys(sample) <= _swift_key_paths()  # nothing the Swift structs cannot write
    for r in doc["results"]:  # internally consistent figures
        lat = r["latency_ms"]
        assert lat["p50"] == pytest.approx(np.percentile(lat["samples"], 50))
        assert lat["p90"] == pytest.approx(np.percentile(lat["samples"], 90))
        assert r["fps"] == pytest.approx(r["model"]["output_frames"] / (lat["p50"] / 1000), rel=1e-6)
    generated = app_doc(ios.AppRun("r", "tiny.mlpackage", ("all", "cpuOnly")).launch_arguments(), "iphone16pro")
    assert _keys(generated) <= _swift_key_paths()
    assert ios.parse_app_results(generated, manifest=TINY_MANIFEST, simulator=False)["results"][0]["model"][
        "artifact_sha256"] == TINY_MANIFEST["sha256"]  # filled from the manifest


def test_parse_app_results_simulator_note_and_errors(tmp_path):
    args = ios.AppRun("r", "tiny.mlpackage", ("cpuOnly", "all")).launch_arguments()
    doc = app_doc(args, "ios-simulator")
    parsed = ios.parse_app_results(doc, simulator=True, manifest=TINY_MANIFEST)
    assert all("no Neural Engine" in r["notes"] for r in parsed["results"])  # added where the app left it out
    assert "no Neural Engine" not in doc["results"][1]["notes"]  # input not modified
    with pytest.raises(UserError, match="ran on the simulator"):
        ios.parse_app_results(doc, simulator=False)
    with pytest.raises(UserError, match="expected simulator results"):
        ios.parse_app_results(app_doc(args, "iphone16pro"), simulator=True)
    other = app_doc(args, "iphone16pro")
    other["tool"]["name"] = "android_bench"
    with pytest.raises(UserError, match="not ios_bench"):
        ios.parse_app_results(other)
    wrong = app_doc(args, "iphone16pro")
    wrong["results"][0]["model"]["width"] = 512
    with pytest.raises(UserError, match="model.width 512"):
        ios.parse_app_results(wrong, manifest=TINY_MANIFEST)
    missing = app_doc(args, "iphone16pro")
    del missing["results"][0]["latency_ms"]["p50"]
    with pytest.raises(UserError, match="not valid turbovaed.bench/1"):
        ios.parse_app_results(missing)
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(doc)[:200])
    with pytest.raises(UserError, match="not JSON"):
        ios.parse_app_results(cut)
    with pytest.raises(UserError, match="not found"):
        ios.parse_app_results(tmp_path / "missing.json")
    run = ios.AppRun("r", "tiny.mlpackage", ("cpuOnly", "all"), warmup=1, iters=5)
    ios.check_matches_run(doc, run, "x")
    with pytest.raises(UserError, match="compute units"):
        ios.check_matches_run(doc, ios.AppRun("r", "tiny.mlpackage", ("all",)), "x")
    with pytest.raises(UserError, match="iterations"):
        ios.check_matches_run(doc, ios.AppRun("r", "tiny.mlpackage", ("cpuOnly", "all"), iters=9), "x")


# ------------------------------------------------------------------------------------ command lines


def test_xcodebuild_commands():
    proj, dd = Path("/w/ios_bench/TurboVAEDBench.xcodeproj"), Path("/w/out/ios/DerivedData")
    assert ios.xcodebuild_command(proj, simulator=False, derived_data=dd, team="ABCDE12345") == [
        "xcodebuild", "-project", str(proj), "-scheme", "TurboVAEDBenchApp", "-configuration", "Release",
        "-destination", "generic/platform=iOS", "-derivedDataPath", str(dd), "-quiet",
        "-allowProvisioningUpdates", "build", "DEVELOPMENT_TEAM=ABCDE12345"]
    assert ios.xcodebuild_command(proj, simulator=False, derived_data=dd)[-1] == "build"
    assert ios.xcodebuild_command(proj, simulator=True, derived_data=dd) == [
        "xcodebuild", "-project", str(proj), "-scheme", "TurboVAEDBenchApp", "-configuration", "Release",
        "-destination", "generic/platform=iOS Simulator", "-derivedDataPath", str(dd), "-quiet", "build",
        "CODE_SIGNING_ALLOWED=NO"]
    assert ios.built_app(dd, simulator=False) == dd / "Build/Products/Release-iphoneos/TurboVAEDBenchApp.app"
    assert ios.built_app(dd, simulator=True) == dd / "Build/Products/Release-iphonesimulator/TurboVAEDBenchApp.app"
    assert ios.xcodegen_command(Path("/w/ios_bench")) == [
        "xcodegen", "generate", "--spec", "/w/ios_bench/project.yml", "--project", "/w/ios_bench"]
    assert ios.xcode_version_command() == ["xcodebuild", "-version"]
    assert ios.parse_xcode_version("Xcode 16.2\nBuild version 16C5032a\n") == (16, 2)
    assert ios.parse_xcode_version("Xcode 26\nBuild version 17A324\n") == (26, 0)
    with pytest.raises(UserError, match="Xcode version"):
        ios.parse_xcode_version("xcode-select: error: tool 'xcodebuild' requires Xcode")


def test_devicectl_commands():
    run = ios.AppRun("ab12", "wan-256p.mlpackage", ("all", "cpuAndNeuralEngine"), warmup=2, iters=10,
                     latents="latents-ab12.npy")
    app = Path("/w/TurboVAEDBenchApp.app")
    assert ios.devicectl_list_command(Path("/t/d.json")) == [
        "xcrun", "devicectl", "list", "devices", "--json-output", "/t/d.json"]
    assert ios.devicectl_install_command("BBBB-2222", app) == [
        "xcrun", "devicectl", "device", "install", "app", "--device", "BBBB-2222", str(app)]
    uploads = run.uploads(TINY.with_name("wan-256p.mlpackage"), Path("/t/latents-ab12.npy"))
    assert [(p.name, remote, replace) for p, remote, replace in uploads] == [
        ("wan-256p.mlpackage", "Documents/turbovaed/wan-256p.mlpackage", False),  # not a directory here
        ("wan-256p.manifest.json", "Documents/turbovaed/wan-256p.manifest.json", False),
        ("latents-ab12.npy", "Documents/turbovaed/latents-ab12.npy", False)]
    assert run.uploads(TINY)[0][2] is True  # a real .mlpackage directory replaces the old copy
    assert ios.devicectl_copy_to_command("BBBB-2222", TINY, "Documents/turbovaed/tiny.mlpackage", replace=True) == [
        "xcrun", "devicectl", "device", "copy", "to", "--device", "BBBB-2222", "--domain-type", "appDataContainer",
        "--domain-identifier", "dev.turbovaed.iosbench", "--source", str(TINY),
        "--destination", "Documents/turbovaed/tiny.mlpackage", "--remove-existing-content", "true"]
    assert ios.devicectl_copy_from_command("BBBB-2222", "Documents/" + run.output, Path("/t/r.json")) == [
        "xcrun", "devicectl", "device", "copy", "from", "--device", "BBBB-2222", "--domain-type", "appDataContainer",
        "--domain-identifier", "dev.turbovaed.iosbench", "--source", "Documents/turbovaed/results-ab12.json",
        "--destination", "/t/r.json"]
    assert ios.devicectl_launch_command("BBBB-2222", run.launch_arguments()) == [
        "xcrun", "devicectl", "device", "process", "launch", "--device", "BBBB-2222", "--terminate-existing",
        "dev.turbovaed.iosbench", "-model", "turbovaed/wan-256p.mlpackage", "-computeUnits",
        "all,cpuAndNeuralEngine", "-warmup", "2", "-iters", "10", "-output", "turbovaed/results-ab12.json",
        "-latents", "turbovaed/latents-ab12.npy", "-deviceKind", "iphone16pro", "-exitWhenDone", "YES"]


def test_simctl_and_swift_commands():
    run = ios.AppRun("cd34", "tiny.mlpackage", ("cpuOnly",), warmup=0, iters=3, device_kind="ios-simulator")
    assert ios.simctl_list_command() == ["xcrun", "simctl", "list", "--json", "devices", "available"]
    assert ios.simctl_create_command() == [
        "xcrun", "simctl", "create", "iPhone 16 Pro (turbovaed)", "com.apple.CoreSimulator.SimDeviceType.iPhone-16-Pro"]
    assert ios.simctl_boot_command("S182") == ["xcrun", "simctl", "bootstatus", "S182", "-b"]
    assert ios.simctl_install_command("S182", Path("/w/A.app")) == ["xcrun", "simctl", "install", "S182", "/w/A.app"]
    assert ios.simctl_container_command("S182") == [
        "xcrun", "simctl", "get_app_container", "S182", "dev.turbovaed.iosbench", "data"]
    assert ios.simctl_terminate_command("S182") == ["xcrun", "simctl", "terminate", "S182", "dev.turbovaed.iosbench"]
    assert ios.simctl_launch_command("S182", run.launch_arguments()) == [
        "xcrun", "simctl", "launch", "S182", "dev.turbovaed.iosbench", "-model", "turbovaed/tiny.mlpackage",
        "-computeUnits", "cpuOnly", "-warmup", "0", "-iters", "3", "-output", "turbovaed/results-cd34.json",
        "-deviceKind", "ios-simulator", "-exitWhenDone", "YES"]
    args = ios.app_arguments("/m/x.mlpackage", "/o/r.json", compute_units=("all",), device_kind="mac")
    assert ios.swift_bench_command(Path("/w/ios_bench"), args) == [
        "swift", "run", "-c", "release", "--package-path", "/w/ios_bench", "turbovaed-ios-bench", "-model",
        "/m/x.mlpackage", "-computeUnits", "all", "-warmup", "1", "-iters", "5", "-output", "/o/r.json",
        "-deviceKind", "mac"]
    with pytest.raises(UserError, match="unknown compute units"):
        ios.app_arguments("m", "o", compute_units=("npu",))


def _phone(ident, name, product, tunnel="connected", platform_="iOS", kind="iPhone"):
    return {"identifier": ident, "deviceProperties": {"name": name},
            "hardwareProperties": {"platform": platform_, "productType": product, "udid": f"udid-{ident}",
                                   "reality": "physical", "deviceType": kind},
            "connectionProperties": {"pairingState": "paired", "tunnelState": tunnel}}


DEVICES = {"result": {"devices": [
    _phone("AAAA", "Old iPhone", "iPhone15,2"),
    _phone("BBBB", "Test 16 Pro", "iPhone17,1", tunnel="disconnected"),
    _phone("CCCC", "iPad", "iPad14,1", kind="iPad"),
    _phone("DDDD", "Watch", "Watch7,1", platform_="watchOS"),
]}}

SIMS = {"devices": {
    "com.apple.CoreSimulator.SimRuntime.iOS-17-5": [
        {"udid": "S175", "name": "iPhone 16 Pro", "deviceTypeIdentifier": ios.SIMULATOR_TYPE, "state": "Shutdown",
         "isAvailable": True}],
    "com.apple.CoreSimulator.SimRuntime.iOS-18-2": [
        {"udid": "S182", "name": "iPhone 16 Pro", "deviceTypeIdentifier": ios.SIMULATOR_TYPE, "state": "Shutdown",
         "isAvailable": True},
        {"udid": "S15", "name": "iPhone 15", "deviceTypeIdentifier": "com.apple.CoreSimulator.SimDeviceType.iPhone-15",
         "state": "Booted", "isAvailable": True},
        {"udid": "GONE", "name": "iPhone 16 Pro", "deviceTypeIdentifier": ios.SIMULATOR_TYPE, "state": "Booted",
         "isAvailable": False}],
    "com.apple.CoreSimulator.SimRuntime.watchOS-11-0": [
        {"udid": "W", "name": "iPhone 16 Pro", "deviceTypeIdentifier": ios.SIMULATOR_TYPE, "state": "Booted"}],
}}


def test_pick_device_and_simulator():
    assert ios.pick_device(DEVICES).identifier == "BBBB"  # the 16 Pro wins over a better-connected older phone
    assert ios.pick_device(DEVICES, "old iphone").identifier == "AAAA"
    assert ios.pick_device(DEVICES, "udid-AAAA").product_type == "iPhone15,2"
    with pytest.raises(UserError, match="'nope' not found.*Test 16 Pro"):
        ios.pick_device(DEVICES, "nope")
    with pytest.raises(UserError, match="no paired iPhone"):
        ios.pick_device({"result": {"devices": [DEVICES["result"]["devices"][2]]}})
    assert ios.pick_simulator(SIMS) == "S182"  # newest runtime; unavailable and non-iOS ones skipped
    booted = json.loads(json.dumps(SIMS))
    booted["devices"]["com.apple.CoreSimulator.SimRuntime.iOS-17-5"][0]["state"] = "Booted"
    assert ios.pick_simulator(booted) == "S175"  # a booted one first
    assert ios.pick_simulator({"devices": {}}) is None


# ------------------------------------------------------------------------------------ latents


def test_prepare_latents(tmp_path):
    t, c, h, w = TINY_MANIFEST["inputs"][0]["shape"]
    z = np.random.default_rng(0).standard_normal((1, c, t, h, w)).astype(np.float32)  # (B, C, T, h, w)
    np.save(tmp_path / "z5.npy", z)
    out = ios.prepare_latents(tmp_path / "z5.npy", TINY_MANIFEST, tmp_path, "r1")
    assert out.name == "latents-r1.npy"
    got = np.load(out)
    assert got.shape == (t, c, h, w) and got.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(got, z[0].transpose(1, 0, 2, 3))
    np.save(tmp_path / "z4.npy", got.astype(np.float16))
    np.testing.assert_allclose(np.load(ios.prepare_latents(tmp_path / "z4.npy", TINY_MANIFEST, tmp_path, "r2")),
                               got, atol=2e-3)
    import torch

    from turbo_vaed.latents_io import save_latents

    save_latents(tmp_path / "z.safetensors", torch.from_numpy(z), "wan")
    np.testing.assert_array_equal(np.load(ios.prepare_latents(tmp_path / "z.safetensors", TINY_MANIFEST, tmp_path,
                                                              "r3")), got)
    (tmp_path / "raw.bin").write_bytes(got.astype(np.float16).tobytes())
    assert ios.prepare_latents(tmp_path / "raw.bin", TINY_MANIFEST, tmp_path, "r4").name == "latents-r4.bin"
    (tmp_path / "short.bin").write_bytes(b"\0" * 10)
    with pytest.raises(UserError, match="raw latents"):
        ios.prepare_latents(tmp_path / "short.bin", TINY_MANIFEST, tmp_path, "r5")
    np.save(tmp_path / "wrong.npy", np.zeros((3, c, h, w), np.float32))
    with pytest.raises(UserError, match=r"shape \[3, 16, 2, 2\] but the artifact decodes \[2, 16, 2, 2\]"):
        ios.prepare_latents(tmp_path / "wrong.npy", TINY_MANIFEST, tmp_path, "r6")


def test_load_artifact_errors(tmp_path):
    artifact, manifest_path, manifest = ios.load_artifact(TINY)
    assert manifest["family"] == "wan" and manifest_path.name == "tiny.manifest.json"
    with pytest.raises(UserError, match="needs an artifact"):
        ios.load_artifact(None)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(UserError, match="not a Core ML"):
        ios.load_artifact(onnx)
    lonely = tmp_path / "lonely.mlpackage"
    lonely.mkdir()
    with pytest.raises(UserError, match="manifest not found"):
        ios.load_artifact(lonely)
    (tmp_path / "lonely.manifest.json").write_text(json.dumps({**TINY_MANIFEST, "target": "onnx"}))
    with pytest.raises(UserError, match="onnx artifact"):
        ios.load_artifact(lonely)
    (tmp_path / "lonely.manifest.json").write_text("{")
    with pytest.raises(UserError, match="not a turbovaed manifest"):
        ios.load_artifact(lonely)


# ------------------------------------------------------------------------------------ the flow, faked


def _done(stdout: str = "", rc: int = 0, stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], rc, stdout, stderr)


class FakeXcode:
    """Answers xcodebuild / xcodegen / xcrun like a Mac with Xcode 16.2 and the app installed would."""

    def __init__(self, root: Path, *, app_error: str | None = None, finish: bool = True,
                 devices: dict = DEVICES, sims: dict = SIMS, xcode: str = "Xcode 16.2\nBuild version 16C5032a\n"):
        self.root, self.app_error, self.finish = root, app_error, finish
        self.devices, self.sims, self.xcode = devices, sims, xcode
        self.container = root / "container"  # the app's data container (device or simulator)
        self.calls: list[list[str]] = []
        self.launched: list[str] | None = None

    def _app_ran(self, args: list[str], kind: str) -> None:
        self.launched = args
        opts = dict(zip(args[::2], args[1::2], strict=False))
        docs = self.container / "Documents"
        model = docs / opts["-model"]
        assert model.is_dir() and model.with_name(model.stem + ".manifest.json").is_file(), "inputs not copied"
        if "-latents" in opts:
            assert (docs / opts["-latents"]).is_file()
        out = docs / opts["-output"]
        manifest = json.loads(model.with_name(model.stem + ".manifest.json").read_text())
        if self.app_error:
            out.with_name(out.name + ".error").write_text(self.app_error + "\n")
        elif self.finish:
            out.write_text(json.dumps(app_doc(args, kind, manifest)))

    def __call__(self, cmd, timeout=None):
        cmd = [str(c) for c in cmd]
        self.calls.append(cmd)
        if cmd == ["xcodebuild", "-version"]:
            return _done(self.xcode)
        if cmd[0] == "xcodegen":
            (Path(cmd[cmd.index("--project") + 1]) / f"{ios.PROJECT}.xcodeproj").mkdir(exist_ok=True)
            return _done()
        if cmd[0] == "xcodebuild":
            dd = Path(cmd[cmd.index("-derivedDataPath") + 1])
            ios.built_app(dd, simulator="CODE_SIGNING_ALLOWED=NO" in cmd).mkdir(parents=True, exist_ok=True)
            return _done()
        tool, verb = cmd[1], cmd[2]
        if tool == "simctl":
            if verb == "list":
                return _done(json.dumps(self.sims))
            if verb == "create":
                return _done("NEW-UDID\n")
            if verb == "get_app_container":
                return _done(f"{self.container}\n")
            if verb == "terminate":
                return _done(rc=3, stderr="found nothing to terminate")
            if verb == "launch":
                self._app_ran(cmd[5:], "ios-simulator")
                return _done(f"{ios.BUNDLE_ID}: 4242\n")
            return _done()
        assert tool == "devicectl"
        if cmd[2:4] == ["list", "devices"]:
            Path(cmd[cmd.index("--json-output") + 1]).write_text(json.dumps(self.devices))
            return _done()
        if cmd[3:5] == ["copy", "to"]:
            src, dest = Path(cmd[cmd.index("--source") + 1]), self.container / cmd[cmd.index("--destination") + 1]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dest, dirs_exist_ok=True) if src.is_dir() else shutil.copyfile(src, dest)
            return _done()
        if cmd[3:5] == ["copy", "from"]:
            src = self.container / cmd[cmd.index("--source") + 1]
            if not src.is_file():
                return _done(rc=1, stderr="ERROR: The file doesn't exist.")
            shutil.copyfile(src, cmd[cmd.index("--destination") + 1])
            return _done()
        if cmd[3:5] == ["process", "launch"]:
            self._app_ran(cmd[cmd.index(ios.BUNDLE_ID) + 1:], "iphone16pro")
            return _done("Launched application with dev.turbovaed.iosbench bundle identifier.\n")
        return _done()  # install


@pytest.fixture
def fake_mac(tmp_path, monkeypatch):
    """A fake macOS + Xcode around the real driver; ios_bench sources are copied so nothing is written here."""
    project = tmp_path / "ios_bench"
    project.mkdir()
    shutil.copyfile(IOS_DIR / "project.yml", project / "project.yml")
    fake = FakeXcode(tmp_path)
    monkeypatch.setattr(ios, "IOS_BENCH_DIR", project)
    monkeypatch.setattr(ios, "_host_is_macos", lambda: True)
    monkeypatch.setattr(ios, "_run", fake)
    monkeypatch.setattr(ios, "_sleep", lambda s: None)
    monkeypatch.setattr(ios.shutil, "which", lambda name: f"/opt/homebrew/bin/{name}")
    monkeypatch.delenv(ios.ENV_TIMEOUT, raising=False)
    monkeypatch.delenv(ios.ENV_DEVICE, raising=False)
    monkeypatch.setenv(ios.ENV_TEAM, "ABCDE12345")
    return fake


def test_simulator_flow(cli, fake_mac, tmp_path):
    out = tmp_path / "sim.json"
    res = cli("bench", "--device", "iphone16pro", TINY, "--simulator", "--compute-units", "cpuOnly",
              "--compute-units", "all", "--warmup", "0", "--iters", "3", "--json", out, "--out", tmp_path / "o")
    assert res.code == 0, res.err
    doc = json.loads(out.read_text())
    validate_results(doc)
    assert [r["label"] for r in doc["results"]] == ["student/coreml-cpuOnly", "student/coreml-all"]
    assert all(r["device"]["kind"] == "ios-simulator" and "no Neural Engine" in r["notes"] for r in doc["results"])
    assert doc["results"][0]["model"]["artifact_sha256"] == TINY_MANIFEST["sha256"]
    verbs = [c[1] if c[0] == "xcodebuild" and len(c) == 2 else " ".join(c[:3]) for c in fake_mac.calls]
    project = str(tmp_path / "ios_bench" / "TurboVAEDBench.xcodeproj")
    assert verbs == ["-version", "xcodegen generate --spec", f"xcodebuild -project {project}", "xcrun simctl list",
                     "xcrun simctl bootstatus", "xcrun simctl install", "xcrun simctl get_app_container",
                     "xcrun simctl terminate", "xcrun simctl launch"]
    assert fake_mac.calls[3 + 1] == ["xcrun", "simctl", "bootstatus", "S182", "-b"]
    assert "CODE_SIGNING_ALLOWED=NO" in fake_mac.calls[2] and "DEVELOPMENT_TEAM=ABCDE12345" not in fake_mac.calls[2]
    assert fake_mac.launched[fake_mac.launched.index("-deviceKind") + 1] == "ios-simulator"
    assert "turbovaed bench --device iphone16pro" in res.out and f"wrote {out}" in res.out.replace("\n", "")
    assert len(list((tmp_path / "o" / "ios").glob("tiny-simulator-*.json"))) == 1  # raw copy kept


def test_simulator_is_created_when_missing(cli, fake_mac, tmp_path):
    fake_mac.sims = {"devices": {}}
    res = cli("bench", "--device", "iphone16pro", TINY, "--simulator", "--out", tmp_path / "o")
    assert res.code == 0, res.err
    assert ["xcrun", "simctl", "bootstatus", "NEW-UDID", "-b"] in fake_mac.calls
    assert ios.simctl_create_command() in fake_mac.calls


def test_device_flow_with_latents(cli, fake_mac, tmp_path):
    t, c, h, w = TINY_MANIFEST["inputs"][0]["shape"]
    np.save(tmp_path / "z.npy", np.ones((t, c, h, w), np.float32))
    out = tmp_path / "dev.json"
    res = cli("bench", "--device", "iphone16pro", TINY, "--compute-units", "all", "--compute-units",
              "cpuAndNeuralEngine", "--iters", "4", "--latents", tmp_path / "z.npy", "--json", out,
              "--out", tmp_path / "o")
    assert res.code == 0, res.err
    doc = json.loads(out.read_text())
    assert [r["runtime"]["compute_units"] for r in doc["results"]] == ["all", "cpuAndNeuralEngine"]
    assert all(r["device"]["kind"] == "iphone16pro" for r in doc["results"])
    build = next(c for c in fake_mac.calls if c[0] == "xcodebuild" and "build" in c)
    assert "generic/platform=iOS" in build and "DEVELOPMENT_TEAM=ABCDE12345" in build
    assert ["xcrun", "devicectl", "device", "install", "app", "--device", "BBBB",
            str(ios.built_app(tmp_path / "o" / "ios" / "DerivedData", simulator=False))] in fake_mac.calls
    copied = [c[c.index("--destination") + 1] for c in fake_mac.calls if c[3:5] == ["copy", "to"]]
    assert copied[:2] == ["Documents/turbovaed/tiny.mlpackage", "Documents/turbovaed/tiny.manifest.json"]
    assert re.fullmatch(r"Documents/turbovaed/latents-\w+\.npy", copied[2])
    assert fake_mac.launched[fake_mac.launched.index("-latents") + 1] == copied[2].removeprefix("Documents/")
    assert np.load(fake_mac.container / copied[2]).shape == (t, c, h, w)


def test_device_selection_by_serial(cli, fake_mac, tmp_path):
    res = cli("bench", "--device", "iphone16pro", TINY, "--serial", "Old iPhone", "--out", tmp_path / "o")
    assert res.code == 0, res.err
    assert any(c[3:5] == ["process", "launch"] and "AAAA" in c for c in fake_mac.calls)
    res = cli("bench", "--device", "iphone16pro", TINY, "--serial", "Nope", "--out", tmp_path / "o")
    assert res.code == 2 and "'Nope' not found" in res.err


def test_app_failure_and_timeout_are_one_line_errors(cli, fake_mac, tmp_path, monkeypatch):
    fake_mac.app_error = "Core ML could not load tiny.mlpackage with cpuAndNeuralEngine: bad model"
    res = cli("bench", "--device", "iphone16pro", TINY, "--simulator", "--out", tmp_path / "o")
    assert res.code == 2
    assert res.err.strip().startswith("error: ios_bench on the simulator failed: Core ML could not load")
    assert len(res.err.strip().splitlines()) == 1
    fake_mac.app_error, fake_mac.finish = None, False
    monkeypatch.setenv(ios.ENV_TIMEOUT, "0")
    res = cli("bench", "--device", "iphone16pro", TINY, "--out", tmp_path / "o")
    assert res.code == 2 and "no results from ios_bench on Test 16 Pro after 0 s" in res.err


def test_old_xcode_and_wrong_inputs(cli, fake_mac, tmp_path):
    fake_mac.xcode = "Xcode 15.4\nBuild version 15F31d\n"
    res = cli("bench", "--device", "iphone16pro", TINY, "--simulator", "--out", tmp_path / "o")
    assert res.code == 2 and "Xcode 15.4 is too old" in res.err
    res = cli("bench", "--device", "iphone16pro", TINY, "--runtime", "onnxruntime")
    assert res.code == 2 and "Core ML only" in res.err
    np.save(tmp_path / "bad.npy", np.zeros((1, 2, 3), np.float32))
    fake_mac.xcode = "Xcode 16.2\n"
    res = cli("bench", "--device", "iphone16pro", TINY, "--latents", tmp_path / "bad.npy", "--out", tmp_path / "o")
    assert res.code == 2 and "but the artifact decodes" in res.err
    assert not any(c[:2] == ["xcrun", "devicectl"] for c in fake_mac.calls)  # failed before touching the phone


# ------------------------------------------------------------------------------------ off macOS


def _one_line_error(res) -> str:
    lines = res.err.strip().splitlines()
    assert res.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.err
    return lines[0]


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the off-macOS message; on macOS the bench runs")
def test_off_macos_exit_2_one_line(cli, tmp_path):
    pkg = tmp_path / "student.mlpackage"
    pkg.mkdir()
    line = _one_line_error(cli("bench", "--device", "iphone16pro", pkg))
    assert "needs macOS with Xcode 16+" in line and "--device host" in line
    assert "needs macOS" in _one_line_error(cli("bench", "--device", "iphone16pro", pkg, "--simulator"))


def test_off_macos_message_on_any_host(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(ios, "_host_is_macos", lambda: False)
    monkeypatch.setattr(ios, "_run", lambda *a, **k: pytest.fail("no tool may run off macOS"))
    pkg = tmp_path / "student.mlpackage"
    pkg.mkdir()
    assert "needs macOS with Xcode 16+" in _one_line_error(cli("bench", "--device", "iphone16pro", pkg))
    with pytest.raises(UserError, match="needs macOS"):
        ios.bench_mac_swift(ios.BenchOptions(device="mac", artifact=TINY))


# ------------------------------------------------------------------------------------ streaming (export --stream)


def _exported_stream_section(**v2) -> dict:
    """The ``stream`` section and control inputs `turbovaed export --stream` writes (exporters.add_stream_section);
    ``v2``: StreamStep protocol fields other than v1's (those the StreamStep of this checkout has)."""
    import dataclasses

    import torch

    from turbo_vaed.decoders.base import StreamStep
    from turbo_vaed.exporters import add_stream_section

    manifest = {"inputs": [{"name": "latents", "shape": [2, 16, 4, 4], "dtype": "float16"}],
                "outputs": [{"name": "frames", "shape": [8, 3, 32, 32], "dtype": "float16"}]}
    known = {f.name for f in dataclasses.fields(StreamStep)}
    step = StreamStep(module=torch.nn.Identity(), latent_frames=2, frames_per_chunk=8, first_chunk_skip=3, notes=["n"],
                      states=[("state0", (2, 16, 4, 4)), ("state1", (2, 8, 32, 32))],
                      **{k: v for k, v in v2.items() if k in known})
    add_stream_section(manifest, step, "float16", None)
    return manifest


def _loop_keys(stream: dict) -> set[str]:
    """Keys of a ``stream`` section that change the loop: all but the descriptions and fields at a neutral value
    (null, empty, 0, false: what an absent v2 field means)."""
    return {k for k, v in stream.items() if k not in DESCRIPTIVE and v not in (None, [], (), 0, False)}


def _swift_coding_keys(path: Path, type_name: str) -> set[str]:
    """Raw JSON keys of the CodingKeys enum inside the Swift struct `type_name`."""
    stack = [_parse(path)]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        name = node.child_by_field_name("name") if node.type == "class_declaration" else None
        if name is None or name.text.decode() != type_name:
            continue
        for member in node.child_by_field_name("body").children:
            if member.type == "class_declaration" and member.child_by_field_name("name").text.decode() == "CodingKeys":
                return {c.text.decode().strip('"') for e in member.child_by_field_name("body").children
                        if e.type == "enum_entry" for c in e.children if c.type == "line_string_literal"}
    raise AssertionError(f"{type_name} not found in {path.name}")


def test_swift_reads_every_stream_field_the_exporter_writes():
    exported = _exported_stream_section()
    stream = exported["stream"]
    manifest_swift = LIB_DIR / "ArtifactManifest.swift"
    assert "stream" in _swift_coding_keys(manifest_swift, "ArtifactManifest")
    loop_fields = {"chunk_latent_frames", "frames_per_chunk", "first_chunk_skip", "states"}
    assert loop_fields <= set(stream)
    assert _swift_coding_keys(manifest_swift, "StreamSpec") == loop_fields | set(V2_FIELDS)
    assert _loop_keys(stream) <= loop_fields | set(V2_FIELDS)  # every field the loop needs is read
    assert _swift_coding_keys(manifest_swift, "State") == set(stream["states"][0])  # name shape dtype init next
    assert loop_fields <= set(TINY_STREAM_MANIFEST["stream"]) <= set(stream)  # the fixture has the exporter's layout
    # the flag inputs by the exporter's names; every state's `next` output fed back; the skip and tail rules used
    flags = [i["name"] for i in exported["inputs"][1:3]]
    source = _swift("ArtifactManifest.swift")
    assert flags == ["first", "trim"]
    assert f'firstInput = "{flags[0]}"' in source and f'trimInput = "{flags[1]}"' in source
    assert [o["name"] for o in exported["outputs"][1:]] == [s["next"] for s in stream["states"]]
    loop = _swift("StreamLoop.swift")
    assert "state.next" in loop and "states = next" in loop  # outputs become the next call's inputs
    assert "StreamSpec.firstInput" in loop and "StreamSpec.trimInput" in loop
    assert "firstChunkSkip" in source and "framesPerLatentFrame" in source and "chunkLatentFrames" in loop
    runner = _swift("BenchmarkRunner.swift")
    assert "measureStream" in runner and "feeder.carry(output)" in runner
    assert "feeder.keptFrames(output, chunk: chunk)" in runner and "frames += kept" in runner
    assert '"student/coreml-\\(units.rawValue)-stream"' in runner  # the host's `student/<rt>-stream` labels
    # the default clip is the host's
    from turbo_vaed.bench.stream import DEFAULT_CLIP_LATENT_FRAMES

    assert f"defaultClipLatentFrames = {DEFAULT_CLIP_LATENT_FRAMES}" in source
    assert ios.DEFAULT_STREAM_FRAMES == DEFAULT_CLIP_LATENT_FRAMES


def test_streamed_frames_follow_the_family_rule():
    """The reference loop the fake app counts with: 1 + 4 (T - 1) frames for wan-like chunks, whatever k."""
    for k in (1, 2, 3):
        stream = {"chunk_latent_frames": k, "frames_per_chunk": 4 * k, "first_chunk_skip": 3,
                  "states": [{"name": "state0", "shape": [1, 2, 1, 1]}]}
        for clip in (1, 2, 5, 16, 21):
            assert streamed_frames(stream, clip, True) == (-(-clip // k), 1 + 4 * (clip - 1))
        assert streamed_frames(stream, 16, False)[1] == 64  # cogvideox at an even length: nothing trimmed


def test_stream_launch_arguments():
    run = ios.AppRun("s1", "tiny-stream.mlpackage", ("all",), stream_frames=21, trim=True)
    args = run.launch_arguments()
    assert args[args.index("-streamFrames"):args.index("-streamFrames") + 4] == ["-streamFrames", "21", "-trim", "YES"]
    names = set(re.findall(r'"([\w-]+)"', _swift("BenchArguments.swift").split("names: Set<String> = [")[1]
                           .split("]")[0]))
    flags = {a[1:] for a in args if a.startswith("-") and a[1:].isalpha()}
    assert {"streamFrames", "trim"} <= flags <= names
    assert ios.app_arguments("m", "o", stream_frames=16, trim=False)[-4:] == ["-streamFrames", "16", "-trim", "NO"]
    assert "-streamFrames" not in ios.AppRun("r", "m.mlpackage").launch_arguments()  # whole-chunk runs unchanged
    with pytest.raises(UserError, match="stream-frames must be >= 1"):
        ios.app_arguments("m", "o", stream_frames=0)
    usage = _swift("BenchArguments.swift")
    assert "-streamFrames N" in usage and "-trim YES|NO" in usage


def test_stream_request_and_trim():
    opts = ios.BenchOptions(device="iphone16pro", extra={"stream": True, "stream_frames": 9})
    assert ios.stream_request(opts, TINY_STREAM_MANIFEST, TINY_STREAM) == 9
    assert ios.stream_request(ios.BenchOptions(), TINY_STREAM_MANIFEST, TINY_STREAM) == 21  # a streaming artifact
    assert ios.stream_request(ios.BenchOptions(), TINY_MANIFEST, TINY) is None
    with pytest.raises(UserError, match="tiny.mlpackage is a whole-chunk artifact: export it with .*--stream"):
        ios.stream_request(opts, TINY_MANIFEST, TINY)
    assert stream_trims(TINY_STREAM_MANIFEST, 16) is True  # wan always trims
    cog = {**TINY_STREAM_MANIFEST, "family": "cogvideox"}
    assert (stream_trims(cog, 21), stream_trims(cog, 16)) == (True, False)


def _stream_manifest(**sizes) -> dict:
    """The fixture's streaming manifest at another size (what the sample results were measured with)."""
    m = json.loads(json.dumps(TINY_STREAM_MANIFEST))
    c, h, w, width = sizes.get("c", 16), sizes.get("h", 32), sizes.get("w", 32), sizes.get("width", 256)
    m.update(width=width, height=width, preset=f"{width}p")
    m["inputs"][0]["shape"] = [2, c, h, w]
    m["outputs"][0]["shape"] = [8, 3, width, width]
    return m


def test_sample_stream_results_validate_and_parse():
    sample = json.loads((FIXTURES / "sample-stream-results.json").read_text())  # also decoded by the Swift tests
    validate_results(sample, "sample-stream-results.json")
    assert _keys(sample) <= _swift_key_paths()
    doc = ios.parse_app_results(FIXTURES / "sample-stream-results.json", manifest=_stream_manifest(),
                                simulator=False)
    (r,) = doc["results"]
    s, lat = r["stream"], r["latency_ms"]
    assert (s["chunk_latent_frames"], s["latent_frames"], s["frames"]) == (2, 21, 81)
    chunks, frames = streamed_frames(_stream_manifest()["stream"], 21, True)
    assert frames == s["frames"] == r["model"]["output_frames"] and r["model"]["latent_shape"][2] == 21
    assert len(lat["samples"]) == r["settings"]["iterations"] == chunks - 1 and r["settings"]["warmup"] == 0
    for key in ("min", "p50", "p90", "max", "mean"):
        want = float(np.percentile(lat["samples"], {"min": 0, "max": 100}.get(key, 50 if key == "p50" else 90))) \
            if key != "mean" else float(np.mean(lat["samples"]))
        assert s["steady_chunk_ms"][key] == pytest.approx(want) == pytest.approx(lat[key])
    assert s["first_chunk_ms"] == r["cold_start"]["first_run_ms"]
    assert r["fps"] == pytest.approx(8 / (lat["p50"] / 1000), rel=1e-6)
    wall = (s["first_chunk_ms"] + sum(lat["samples"])) / 1000
    assert s["sustained_fps"] < frames / wall  # the clip's wall time includes more than the predictions


def test_stream_results_check_against_manifest_and_run():
    run = ios.AppRun("s", "tiny-stream.mlpackage", ("all", "cpuOnly"), stream_frames=5, trim=True)
    doc = app_doc(run.launch_arguments(), "iphone16pro", TINY_STREAM_MANIFEST)
    validate_results(doc)
    assert _keys(doc) <= _swift_key_paths()
    parsed = ios.parse_app_results(doc, manifest=TINY_STREAM_MANIFEST, simulator=False)
    assert [r["stream"]["frames"] for r in parsed["results"]] == [17, 17]
    ios.check_matches_run(parsed, run, "x")  # warm-up/iterations do not apply to a streamed clip
    with pytest.raises(UserError, match="streamed 5 latent frames, asked for a clip of 21"):
        ios.check_matches_run(parsed, ios.AppRun("s", "m", ("all", "cpuOnly"), stream_frames=21), "x")
    with pytest.raises(UserError, match="a streamed result for a whole-chunk artifact"):
        ios.parse_app_results(doc, manifest=TINY_MANIFEST)
    whole = app_doc(ios.AppRun("r", "tiny.mlpackage").launch_arguments(), "iphone16pro")
    with pytest.raises(UserError, match="a whole-chunk result for a streaming artifact"):
        ios.parse_app_results(whole, manifest=TINY_STREAM_MANIFEST)
    other = json.loads(json.dumps(TINY_STREAM_MANIFEST))
    other["inputs"][0]["shape"][0] = 3
    with pytest.raises(UserError, match="chunks of 2 latent frames, the artifact's manifest says 3"):
        ios.parse_app_results(doc, manifest=other)


def test_prepare_clip_latents(tmp_path):
    import torch

    from turbo_vaed.latents_io import save_latents

    m = TINY_STREAM_MANIFEST
    clip = np.random.default_rng(0).standard_normal((5, 16, 2, 2)).astype(np.float32)
    np.save(tmp_path / "z.npy", clip)
    out, frames = ios.prepare_clip_latents(tmp_path / "z.npy", m, tmp_path, "a")
    assert frames == 5 and np.array_equal(np.load(out), clip)
    z = torch.from_numpy(clip.transpose(1, 0, 2, 3)[None].copy())  # (1, C, T, h, w)
    save_latents(tmp_path / "z.safetensors", z, "wan")
    out, frames = ios.prepare_clip_latents(tmp_path / "z.safetensors", m, tmp_path, "b")
    assert frames == 5 and np.array_equal(np.load(out), clip)
    (tmp_path / "z.bin").write_bytes(clip.astype(np.float16).tobytes())
    out, frames = ios.prepare_clip_latents(tmp_path / "z.bin", m, tmp_path, "c", frames=5)
    assert frames == 5 and out.suffix == ".npy"
    np.testing.assert_allclose(np.load(out), clip, atol=2e-3)
    with pytest.raises(UserError, match="pass --stream-frames T"):
        ios.prepare_clip_latents(tmp_path / "z.bin", m, tmp_path, "d")  # 21 frames would not fit
    np.save(tmp_path / "bad.npy", np.zeros((5, 8, 2, 2), np.float32))
    with pytest.raises(UserError, match=r"a clip for this artifact is \[T, 16, 2, 2\]"):
        ios.prepare_clip_latents(tmp_path / "bad.npy", m, tmp_path, "e")


def test_stream_simulator_flow(cli, fake_mac, tmp_path):
    """A streaming artifact streams by itself (default 21-frame clip); the arguments carry the clip and trim."""
    out = tmp_path / "stream.json"
    res = cli("bench", "--device", "iphone16pro", TINY_STREAM, "--simulator", "--json", out, "--out", tmp_path / "o")
    assert res.code == 0, res.err
    launched = fake_mac.launched
    assert launched[launched.index("-streamFrames") + 1] == "21" and launched[launched.index("-trim") + 1] == "YES"
    (r,) = json.loads(out.read_text())["results"]
    assert r["stream"]["latent_frames"] == 21 and r["stream"]["frames"] == 81 == r["model"]["output_frames"]
    assert r["label"] == "student/coreml-all-stream" and "no Neural Engine" in r["notes"]


def test_stream_device_flow_with_latents(fake_mac, tmp_path):
    """`bench --stream` (BenchOptions.extra, as bench_cmd passes it): the latents file sets the clip's length."""
    clip = np.ones((7, 16, 2, 2), np.float32)
    np.save(tmp_path / "clip.npy", clip)
    opts = ios.BenchOptions(device="iphone16pro", artifact=TINY_STREAM, latents=tmp_path / "clip.npy",
                            out_dir=tmp_path / "o", extra={"stream": True, "stream_frames": 21})
    doc = ios.bench_iphone(opts)
    launched = fake_mac.launched
    assert launched[launched.index("-streamFrames") + 1] == "7"
    copied = next(c[c.index("--destination") + 1] for c in fake_mac.calls
                  if c[3:5] == ["copy", "to"] and "latents" in c[c.index("--destination") + 1])
    assert np.load(fake_mac.container / copied).shape == (7, 16, 2, 2)
    assert doc["results"][0]["stream"]["frames"] == 1 + 4 * 6
    with pytest.raises(UserError, match="whole-chunk artifact"):
        ios.bench_iphone(ios.BenchOptions(device="iphone16pro", artifact=TINY, out_dir=tmp_path / "o",
                                          extra={"stream": True}))


# ------------------------------------------------------------------------------------ streaming protocol v2


def _v1_stream(k: int = 2, per: int = 4, skip: int = 3) -> dict:
    return {"chunk_latent_frames": k, "frames_per_chunk": per * k, "first_chunk_skip": skip,
            "states": [{"name": "state0", "shape": [1, 2, 1, 1]}]}


def _v2_stream(controls=("first", "start", "remaining"), k: int = 2, flush: int = 1, restart_at=()) -> dict:
    return {**_v1_stream(k), "controls": list(controls), "valid_output": "valid", "flush_chunks": flush,
            "restart_at": list(restart_at)}


def _zero_step(frames_per_chunk: int):
    """A v1 step: zero frames and states; it checks it is fed latents, first, trim and its state."""
    def call(feeds):
        assert set(feeds) == {"latents", "first", "trim", "state0"}
        return [np.zeros((frames_per_chunk, 1, 1, 1), np.float32), np.zeros((1, 2, 1, 1), np.float32)]

    return call


def reference_stream(stream: dict, call, latents: np.ndarray, trims) -> tuple[int, int]:
    """(calls, frames) of turbo_vaed.streaming.run_stream (the host's loop) over ``call``; ``trims``: a bool or the
    family's rule as a function of a segment's latent length."""
    from turbo_vaed.streaming import run_stream

    calls = []

    def counted(feeds):
        calls.append(1)
        return call(feeds)

    frames = sum(f.shape[0] for f in run_stream(counted, stream, latents, trims))
    return len(calls), frames


def _cog(length: int) -> bool:
    """cogvideox's trim rule: an odd number of latent frames trims."""
    return length % 2 == 1


RESTARTS = ((), (3,), (8, 16), (21,), (2, 3, 13), (1,), (20, 40))


def test_app_segments_are_the_reference_cut():
    """StreamSpec.segments (simulated) cuts where turbo_vaed.streaming.segments does: at the listed indices, never
    periodically, ignoring indices at or past the clip's end."""
    from turbo_vaed.streaming import segments

    for restart_at in RESTARTS:
        for clip in (1, 2, 5, 20, 21, 22, 45):
            assert app_segments({"restart_at": list(restart_at)}, clip) == segments(clip, restart_at), (restart_at,
                                                                                                         clip)
    assert app_segments({"restart_at": [21]}, 45) == [(0, 21), (21, 45)]  # not [0, 21), [21, 42), [42, 45)
    assert app_segments({"restart_at": [21]}, 21) == [(0, 21)] == app_segments({"restart_at": None}, 21)
    assert app_segments({}, 5) == [(0, 5)]


def test_app_loop_is_run_stream_for_v1():
    """The simulated app loop (app_stream) keeps what turbo_vaed.streaming.run_stream keeps for a v1 section."""
    call = _zero_step(8)
    for k in (1, 2, 3):
        stream = _v1_stream(k)
        for clip in (1, 2, 5, 16, 21):
            for trim in (True, False):
                got = app_stream(stream, _zero_step(4 * k), np.zeros((clip, 1, 1, 1), np.float32), trim)
                assert got == streamed_frames(stream, clip, trim), (k, clip, trim)
    assert app_stream(_v1_stream(), call, np.zeros((5, 1, 1, 1), np.float32), True) == (3, 17)
    # v1 restarting at 8 and 16: every segment is a video of its own (wan: 1 + 4 (L - 1) each)
    restarted = {**_v1_stream(), "restart_at": [8, 16]}
    z = np.zeros((21, 1, 1, 1), np.float32)
    assert app_stream(restarted, call, z, True) == (4 + 4 + 3, 29 + 29 + 17) == reference_stream(restarted, call, z,
                                                                                                  True)
    # cogvideox: segments of 8 do not trim, the last one of 5 does: one flag per segment
    assert app_stream(restarted, call, z, (False, False, True)) == (11, 32 + 32 + 17)
    assert app_stream(restarted, call, z, (False, False, True)) == reference_stream(restarted, call, z, _cog)
    once = {**_v1_stream(), "restart_at": [21]}  # segments of 21 (odd: trims) and 24 (even)
    z45 = np.zeros((45, 1, 1, 1), np.float32)
    assert app_stream(once, call, z45, (True, False)) == (11 + 12, 81 + 96) == reference_stream(once, call, z45, _cog)
    with pytest.raises(AssertionError, match="one per segment"):  # the apps refuse another count
        app_plan(restarted, 21, (True, False))


def test_v2_fixture_manifest_and_model():
    """tiny-stream-v2 (make_fixtures.py): a valid manifest whose stream section is protocol v2 in the exporter's
    layout, and a Core ML program with exactly its inputs and outputs, in order."""
    from turbo_vaed.exporters.manifest import read_manifest

    manifest = read_manifest(FIXTURES / "tiny-stream-v2.manifest.json")
    stream = manifest["stream"]
    assert stream["controls"] == ["first", "start", "remaining"] and set(stream["controls"]) <= set(CONTROLS)
    assert (stream["valid_output"], stream["flush_chunks"], stream["restart_at"]) == ("valid", 1, [])
    exported = _exported_stream_section(controls=("first", "start", "remaining"), valid_output=True, flush_chunks=1)
    assert list(stream) == list(exported["stream"])  # the exporter's keys, in its order
    names = [t["name"] for t in manifest["inputs"]]
    assert names == ["latents", *stream["controls"], *(s["name"] for s in stream["states"])]
    assert all(t["shape"] == [1, 1, 1, 1] for t in manifest["inputs"][1:1 + len(stream["controls"])])
    outs = manifest["outputs"]
    assert [o["name"] for o in outs] == ["frames", "valid", *(s["next"] for s in stream["states"])]
    assert outs[1]["shape"] == [stream["frames_per_chunk"], 1, 1, 1]
    assert _loop_keys(stream) <= {"chunk_latent_frames", "frames_per_chunk", "first_chunk_skip", "states",
                                  *V2_FIELDS}
    assert TINY_STREAM_MANIFEST["stream"].keys().isdisjoint(V2_FIELDS)  # the v1 fixture stays v1
    ct = pytest.importorskip("coremltools")
    spec = ct.utils.load_spec(str(TINY_STREAM_V2))
    assert [(i.name, list(i.type.multiArrayType.shape)) for i in spec.description.input] == \
        [(t["name"], t["shape"]) for t in manifest["inputs"]]
    assert [o.name for o in spec.description.output] == [o["name"] for o in outs]
    assert manifest["size_bytes"] == sum(p.stat().st_size for p in TINY_STREAM_V2.rglob("*") if p.is_file())


@pytest.mark.parametrize("controls", [("first", "start", "remaining"), ("start", "remaining"),
                                      ("start", "remaining", "trim"), ("first", "trim", "start", "remaining")])
def test_v2_loop_keeps_the_valid_frames(controls):
    """A step whose output lags one latent frame: the app keeps its valid rows, flushes and restarts per segment,
    as the reference loop does."""
    for k in (1, 2, 3):
        for restart_at in RESTARTS:
            for clip in (1, 2, 5, 16, 21, 45):
                stream = _v2_stream(controls, k, restart_at=restart_at)
                stream["frames_per_chunk"] = 4 * k
                lengths = [b - a for a, b in app_segments(stream, clip)]
                z = np.zeros((clip, 1, 1, 1), np.float32)
                calls, kept = app_stream(stream, lagging_step(stream), z, True)
                assert kept == sum(1 + 4 * (n - 1) for n in lengths), (controls, k, restart_at, clip)
                assert calls == sum(-(-n // k) + 1 for n in lengths)
                assert (calls, kept) == reference_stream(stream, lagging_step(stream), z, True)
                if "trim" in controls:  # a segment that does not trim keeps every frame
                    assert app_stream(stream, lagging_step(stream), z, False) == (calls, 4 * clip)
                    flags = tuple(_cog(n) for n in lengths)  # one flag per segment
                    mixed = app_stream(stream, lagging_step(stream), z, flags)
                    assert mixed == (calls, sum(1 + 4 * (n - 1) if t else 4 * n for n, t in zip(lengths, flags,
                                                                                               strict=True)))
                    assert mixed == reference_stream(stream, lagging_step(stream), z, _cog)
    # without its flush chunk the lagging step loses the last latent frame of a segment
    short = _v2_stream(controls, flush=0)
    assert app_stream(short, lagging_step(short), np.zeros((4, 1, 1, 1), np.float32), True) == (2, 9)
    # controls refer to the segment: start counts from 0 and remaining is the segment's latent frames - start
    plan = app_plan(_v2_stream(controls, restart_at=[3]), 5, True)
    assert [c["offset"] for c in plan] == [0, 2, 4, 0, 2] and [c["flush"] for c in plan] == [0, 0, 1, 0, 1]
    assert [control_value(c, "remaining") for c in plan] == [3, 1, -1, 2, 0]
    assert [control_value(c, "first") for c in plan] == [1, 0, 0, 1, 0]
    assert [c["start"] for c in plan] == [0, 2, 2, 3, 3]  # a flush chunk repeats its segment's last chunk
    # one restart index: two segments, not a restart every 3 latent frames
    assert [c["start"] for c in app_plan(_v2_stream(controls, restart_at=[3]), 8, True) if c["first"]] == [0, 3]


def _fixture_step_v2():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("make_fixtures", IOS_DIR / "Tests" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    step = module.TinyStreamStepV2().eval()
    names = ["latents", *TINY_STREAM_V2_MANIFEST["stream"]["controls"], "state0"]

    def call(feeds):
        with torch.no_grad():
            return [o.numpy() for o in step(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names))]

    return call


def test_v2_fixture_step_streams_as_the_swift_tests_expect():
    """The v2 fixture's graph (before conversion), through the app's loop: the counts StreamingTests.swift asserts."""
    call = _fixture_step_v2()
    stream = TINY_STREAM_V2_MANIFEST["stream"]
    clip = np.random.default_rng(0).standard_normal((21, 16, 2, 2)).astype(np.float32)
    assert app_stream(stream, call, clip[:5], True) == (4, 17)
    assert app_stream(stream, call, clip[:4], True)[1] == 13
    assert app_stream(stream, call, clip[:1], True)[1] == 1
    assert app_stream({**stream, "restart_at": [3]}, call, clip[:5], True) == (5, 9 + 5)
    assert app_stream(stream, call, clip, True)[1] == 81
    assert app_stream(stream, call, clip, True) == app_stream(stream, lagging_step(stream), clip, True)
    tests = (IOS_DIR / "Tests" / "TurboVAEDBenchTests" / "StreamingTests.swift").read_text()
    for expected in ("streamV2(clip: 5, restartAt: []).1, 17", "streamV2(clip: 4, restartAt: []).1, 13",
                     "streamV2(clip: 5, restartAt: [3])", "XCTAssertEqual(restarted.1, 9 + 5)",
                     'stream { $0["restart_at"] = [3] }', "XCTAssertEqual(segmented.frames, 9 + 5)"):
        assert expected in tests


def test_v2_fixture_program_streams_as_the_swift_tests_expect():
    """The converted v2 fixture (its ML program, fp16 as the Neural Engine computes, through the MIL reference
    evaluator) in the app's loop: the valid rows, flush chunk and per-segment controls the Swift tests count."""
    from turbo_vaed.targets import coreml_mil as mr

    program = mr.load_program(TINY_STREAM_V2)
    stream = TINY_STREAM_V2_MANIFEST["stream"]

    def call(feeds):
        out = mr.evaluate(program, {n: v.astype(np.float16) for n, v in feeds.items()}, "fp16")
        return [np.asarray(out[o["name"]], np.float32) for o in TINY_STREAM_V2_MANIFEST["outputs"]]

    clip = np.random.default_rng(2).standard_normal((5, 16, 2, 2)).astype(np.float32)
    assert app_stream(stream, call, clip, True) == (4, 17)
    assert app_stream(stream, call, clip[:4], True)[1] == 13
    assert app_stream({**stream, "restart_at": [3]}, call, clip, True) == (5, 9 + 5)


def test_v2_fixture_step_agrees_with_the_reference_loop():
    """turbo_vaed.streaming.run_stream (the host's loop) keeps the frames the app keeps from the v2 fixture, with
    and without restarts."""
    call = _fixture_step_v2()
    stream = TINY_STREAM_V2_MANIFEST["stream"]
    clip = np.random.default_rng(1).standard_normal((21, 16, 2, 2)).astype(np.float32)
    for t in (1, 2, 4, 5, 21):
        assert app_stream(stream, call, clip[:t], True) == reference_stream(stream, call, clip[:t], True)
        assert app_stream(stream, call, clip[:t], True)[1] == 1 + 4 * (t - 1)
    restarted = {**stream, "restart_at": [8, 16]}
    assert app_stream(restarted, call, clip, True) == reference_stream(restarted, call, clip, True) == (5 + 5 + 4,
                                                                                                        29 + 29 + 17)


def test_exporter_v2_section_runs_in_the_app_loop():
    """What `turbovaed export --stream` writes for a valid-output step that restarts (exporters.add_stream_section):
    every loop field is one the apps read, and their loop over it keeps what the host's does."""
    exported = _exported_stream_section(controls=("start", "remaining", "trim"), valid_output=True, flush_chunks=1,
                                        restart_at=(21,))
    stream = exported["stream"]
    assert stream["restart_at"] == [21] and stream["controls"] == ["start", "remaining", "trim"]
    assert "restart_every" not in stream and set(stream["controls"]) <= set(CONTROLS)
    loop_fields = {"chunk_latent_frames", "frames_per_chunk", "first_chunk_skip", "states"}
    assert _loop_keys(stream) == loop_fields | set(V2_FIELDS)  # every v2 field in use, and the Swift reader's keys
    assert _swift_coding_keys(LIB_DIR / "ArtifactManifest.swift", "StreamSpec") == loop_fields | set(V2_FIELDS)
    assert [t["name"] for t in exported["inputs"]] == ["latents", *stream["controls"], "state0", "state1"]
    assert [t["name"] for t in exported["outputs"]] == ["frames", "valid", "state0_next", "state1_next"]
    for clip in (5, 21, 22, 45):
        z = np.zeros((clip, 1, 1, 1), np.float32)
        flags = tuple(_cog(b - a) for a, b in app_segments(stream, clip))
        assert app_stream(stream, lagging_step(stream), z, flags) == reference_stream(stream, lagging_step(stream), z,
                                                                                       _cog)
    from turbo_vaed.bench.options import stream_segment_trims

    assert stream_segment_trims({"family": "cogvideox", "stream": stream}, 45) == (True, False)  # 21 and 24


def test_swift_knows_every_control_and_v2_field():
    source, loop, runner = _swift("ArtifactManifest.swift"), _swift("StreamLoop.swift"), _swift("BenchmarkRunner.swift")
    consts = dict(re.findall(r'static let (\w+Input) = "(\w+)"', source))
    assert set(consts.values()) == set(CONTROLS)
    from turbo_vaed.streaming import CONTROLS as REFERENCE

    known = re.search(r"knownControls = \[([^\]]*)\]", source).group(1)
    assert [consts[c.strip()] for c in known.split(",")] == list(CONTROLS) == list(REFERENCE)
    assert re.search(r"defaultControls = \[firstInput, trimInput\]", source)  # absent controls: v1
    assert '"total"' not in source and "totalInput" not in source + loop  # remaining, not total
    for name in consts:  # every control has a value per chunk
        assert f"case StreamSpec.{name}:" in loop
    # the v2 fields are read (absent or null: v1) and validated with one-line errors
    for key, swift in (("controls", "controls"), ("valid_output", "validOutput"), ("flush_chunks", "flushChunks"),
                       ("restart_at", "restartAt")):
        assert "decodeIfPresent" in source and f"forKey: .{swift})" in source
        assert f"stream.{key}" in source
    assert "decodeIfPresent([Int].self, forKey: .restartAt) ?? []" in source
    assert "restart_every" not in source + loop + runner and "restartEvery" not in source + loop + runner
    assert "does not know" in source and "twice" in source and "is neither the latents" in source
    assert "strictly increasing" in source and "where index <= previous" in source
    assert "shape.first == framesPerChunk" in source  # valid_output: one value per frame
    # segments: the clip cut at every restart index below its length
    assert "restartAt.filter { $0 > 0 && $0 < clipLatentFrames }" in source
    # the loop: segments, flush chunks, states reset at each segment start, controls fed by name, valid rows
    assert "spec.segments(clipLatentFrames:" in loop and "spec.flushChunks" in loop and "flush: true" in loop
    assert re.search(r"if chunk\.first \{\s+reset\(\)", loop)
    assert "chunk.controlValue(control.name)" in loop and "> 0.5" in loop and "io.validName" in loop
    assert "validOutput == nil" in loop  # the v1 counts only without a valid output
    assert "trims.count == 1 || trims.count == segments.count" in loop  # one trim flag, or one per segment
    assert "trims: configuration.trims" in runner and "trimLast" not in source + loop + runner


def test_stream_launch_arguments_per_segment_trims():
    """-trim: one value for the clip, or one per segment when the manifest's restart_at cuts it (-trim NO,NO,YES)."""
    from turbo_vaed.bench.options import stream_segment_trims

    args = ios.app_arguments("m", "o", stream_frames=21, trim=(False, False, True))
    assert args[args.index("-trim"):args.index("-trim") + 2] == ["-trim", "NO,NO,YES"]
    assert args[args.index("-trim") + 1] == "NO,NO,YES"
    for one in (True, (True,), [True]):
        assert ios.app_arguments("m", "o", stream_frames=21, trim=one)[-2:] == ["-trim", "YES"]
    assert "-trim" not in ios.app_arguments("m", "o")
    with pytest.raises(UserError, match="one per segment"):
        ios.app_arguments("m", "o", stream_frames=21, trim=())
    launched = ios.AppRun("s", "m.mlpackage", stream_frames=21, trim=(False, True)).launch_arguments()
    assert launched[launched.index("-trim") + 1] == "NO,YES" and "-trimLast" not in launched
    arguments = _swift("BenchArguments.swift")
    names = set(re.findall(r'"([\w-]+)"', arguments.split("names: Set<String> = [")[1].split("]")[0]))
    assert "trim" in names and "trimLast" not in names and "-trim YES|NO[,...]" in arguments
    assert 'split(separator: ",", omittingEmptySubsequences: false)' in arguments  # "YES," is an error
    assert ios.stream_segment_trims is stream_segment_trims  # one copy, in turbo_vaed.bench.options
    wan = TINY_STREAM_V2_MANIFEST
    cog = {**wan, "family": "cogvideox", "stream": {**wan["stream"], "restart_at": [8, 16]}}
    assert stream_segment_trims(wan, 21) == (True,)
    assert stream_segment_trims({**wan, "stream": {**wan["stream"], "restart_at": [8, 16]}}, 21) == (True,) * 3
    assert stream_segment_trims(cog, 21) == (False, False, True)  # segments of 8, 8 (even) and 5 (odd)
    assert stream_segment_trims(cog, 16) == (False, False)
    assert stream_segment_trims(cog, 5) == (True,)  # one segment: the clip's own rule
    assert stream_segment_trims({**cog, "stream": {**cog["stream"], "restart_at": [21]}}, 45) == (True, False)
    assert stream_segment_trims(TINY_STREAM_MANIFEST, 16) == (True,)  # v1: one flag, as before


def test_stream_segment_trims_cut_with_the_reference_segments(monkeypatch):
    """The drivers' per-segment flags come from turbo_vaed.streaming.segments (the host loop's cut)."""
    import turbo_vaed.streaming as streaming
    from turbo_vaed.bench.options import stream_segment_trims

    seen = []
    real = streaming.segments

    def spy(total, restart_at):
        seen.append((total, restart_at))
        return real(total, restart_at)

    monkeypatch.setattr(streaming, "segments", spy)
    assert stream_segment_trims({"family": "cogvideox", "stream": {"restart_at": [3]}}, 8) == (True, True)  # 3, 5
    assert seen == [(8, [3])]


def test_stream_v2_results_and_simulator_flow(cli, fake_mac, tmp_path):
    """A v2 streaming artifact streams by itself; the results count the valid frames (here 1 + 4 (T - 1))."""
    out = tmp_path / "v2.json"
    res = cli("bench", "--device", "iphone16pro", TINY_STREAM_V2, "--simulator", "--json", out, "--out", tmp_path / "o")
    assert res.code == 0, res.err
    launched = fake_mac.launched
    assert launched[launched.index("-streamFrames") + 1] == "21" and launched[launched.index("-trim") + 1] == "YES"
    (r,) = json.loads(out.read_text())["results"]
    assert r["stream"]["frames"] == 81 == r["model"]["output_frames"]
    assert r["settings"]["iterations"] == (11 + 1) - 1  # 11 chunks and 1 flush chunk, after the first
    # restarting at 8 and 16, cogvideox: segments of 8 do not trim, the last one of 5 does
    art = tmp_path / "cog" / TINY_STREAM_V2.name
    shutil.copytree(TINY_STREAM_V2, art)
    manifest = json.loads(json.dumps(TINY_STREAM_V2_MANIFEST))
    manifest["family"], manifest["stream"]["restart_at"] = "cogvideox", [8, 16]
    art.with_name("tiny-stream-v2.manifest.json").write_text(json.dumps(manifest))
    res = cli("bench", "--device", "iphone16pro", art, "--simulator", "--json", out, "--out", tmp_path / "o")
    assert res.code == 0, res.err
    launched = fake_mac.launched
    assert launched[launched.index("-trim") + 1] == "NO,NO,YES"
    (r,) = json.loads(out.read_text())["results"]
    assert r["stream"]["frames"] == 29 + 29 + 17  # the fixture's rule: 1 + 4 (L - 1) per segment
    assert r["settings"]["iterations"] == (5 + 5 + 4) - 1
    doc = app_doc(ios.AppRun("s", TINY_STREAM_V2.name, ("all",), stream_frames=5, trim=True).launch_arguments(),
                  "iphone16pro", TINY_STREAM_V2_MANIFEST)
    validate_results(doc)
    parsed = ios.parse_app_results(doc, manifest=TINY_STREAM_V2_MANIFEST, simulator=False)
    assert parsed["results"][0]["stream"]["frames"] == 17
