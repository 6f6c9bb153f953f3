"""``turbovaed bench --device iphone16pro``: build ios_bench, run it on an iPhone or the simulator, read its JSON.

Flow (macOS with Xcode 16+): ``xcodegen`` (ios_bench/project.yml) -> ``xcodebuild`` -> install with
``xcrun devicectl`` (device) or ``xcrun simctl`` (an iPhone 16 Pro simulator) -> copy the artifact, its manifest
and optional latents into the app's Documents/turbovaed -> launch with arguments -> fetch the
turbovaed.bench/1 JSON the app writes -> validate. The command lines are built by the pure ``*_command``
functions so they can be checked anywhere; only running them needs a Mac.

A streaming artifact (``turbovaed export --target coreml --stream``, manifest ``stream`` section) is streamed by
the app over a whole clip (``-streamFrames N -trim YES|NO``; ``--stream-frames``, default 21 latent frames, or
the ``--latents`` file's length); each result then has the ``stream`` object of the schema.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from turbo_vaed.bench.options import (
    COMPUTE_UNITS,
    DEFAULT_CLIP_LATENT_FRAMES,
    BenchOptions,
    stream_clip_frames,
    stream_segment_trims,
    trim_flags,
)
from turbo_vaed.bench.schema import validate_results
from turbo_vaed.errors import UserError

IOS_BENCH_DIR = Path(__file__).resolve().parents[2] / "ios_bench"
PROJECT = "TurboVAEDBench"  # TurboVAEDBench.xcodeproj, generated from project.yml
SCHEME = "TurboVAEDBenchApp"
APP_PRODUCT = "TurboVAEDBenchApp.app"
BUNDLE_ID = "dev.turbovaed.iosbench"
SWIFT_PRODUCT = "turbovaed-ios-bench"  # the package's macOS command line
SIMULATOR_NAME = "iPhone 16 Pro"
SIMULATOR_TYPE = "com.apple.CoreSimulator.SimDeviceType.iPhone-16-Pro"
IPHONE_16_PRO = {"iPhone17,1": "iPhone 16 Pro", "iPhone17,2": "iPhone 16 Pro Max"}
MIN_XCODE = (16, 0)
REMOTE_DIR = "turbovaed"  # under the app's Documents
CONFIGURATION = "Release"
POLL_S = 5.0
DEFAULT_TIMEOUT_S = 1800
ENV_TEAM = "TURBOVAED_IOS_TEAM"  # DEVELOPMENT_TEAM for device builds
ENV_DEVICE = "TURBOVAED_IOS_DEVICE"  # devicectl identifier, UDID or name (or --serial)
ENV_TIMEOUT = "TURBOVAED_IOS_TIMEOUT"  # seconds to wait for the app's JSON
DEFAULT_STREAM_FRAMES = DEFAULT_CLIP_LATENT_FRAMES  # one default for host, iPhone and Android
SIMULATOR_NOTE = ("iOS simulator: no Neural Engine; Core ML runs on the Mac's CPU/GPU, so these figures do not "
                  "represent an iPhone")
OFF_MACOS = ("--device iphone16pro needs macOS with Xcode 16+ (xcodebuild, xcrun devicectl/simctl); here use "
             "`turbovaed bench --device host`, or on a Mac run this command or ios_bench by hand "
             "(ios_bench/README.md)")

# Indirection points the tests replace (no Mac needed to test the flow).
_sleep = time.sleep
_clock = time.monotonic


def _host_is_macos() -> bool:
    return platform.system() == "Darwin"


def _run(cmd: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a tool, capturing its output; a missing tool or a hang is a one-line UserError."""
    try:
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found: install Xcode 16+ and select it with "
                        f"`sudo xcode-select -s /Applications/Xcode.app`") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(str(c) for c in cmd[:4])} ...` did not finish in {timeout:.0f} s") from None


def _check(proc: subprocess.CompletedProcess, what: str) -> str:
    """stdout of a finished tool, or a UserError with its last line of output."""
    if proc.returncode != 0:
        lines = [ln.strip() for ln in f"{proc.stderr or ''}\n{proc.stdout or ''}".splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        detail = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        raise UserError(f"{what} failed: {detail}")
    return proc.stdout or ""


# ---------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class AppRun:
    """One launch of the app: which files it reads and writes under Documents, and its arguments."""

    run_id: str
    model: str  # artifact file name, e.g. wan-256p.mlpackage
    compute_units: tuple[str, ...] = ("all",)
    warmup: int = 1
    iters: int = 5
    latents: str | None = None  # file name of the latents copied next to the model
    device_kind: str = "iphone16pro"
    stream_frames: int | None = None  # streaming artifacts: latent frames of the clip (None: whole-chunk run)
    # streaming: whether the full decode of each segment (restart_at; else the whole clip) trims (-trim YES,NO)
    trim: bool | tuple[bool, ...] | None = None

    @property
    def manifest(self) -> str:
        return f"{Path(self.model).stem}.manifest.json"

    @property
    def output(self) -> str:
        """Results JSON, relative to Documents."""
        return f"{REMOTE_DIR}/results-{self.run_id}.json"

    @property
    def error(self) -> str:
        """The app writes this (one line) instead of the JSON when a run fails."""
        return f"{self.output}.error"

    @staticmethod
    def remote(name: str) -> str:
        """Documents-relative path of a file copied for the run."""
        return f"{REMOTE_DIR}/{name}"

    @staticmethod
    def container(documents_relative: str) -> str:
        """Path inside the app's data container (what devicectl and the simulator container use)."""
        return f"Documents/{documents_relative}"

    def launch_arguments(self) -> list[str]:
        """Arguments the app parses (ios_bench/Sources/TurboVAEDBench/BenchArguments.swift)."""
        return app_arguments(self.remote(self.model), self.output, compute_units=self.compute_units,
                             warmup=self.warmup, iters=self.iters,
                             latents=self.remote(self.latents) if self.latents else None,
                             device_kind=self.device_kind, exit_when_done=True, stream_frames=self.stream_frames,
                             trim=self.trim)

    def uploads(self, artifact: Path, latents: Path | None = None) -> list[tuple[Path, str, bool]]:
        """(local path, container path, replace a directory there) for everything the app reads."""
        items = [(artifact, self.container(self.remote(self.model)), artifact.is_dir()),
                 (artifact.with_name(self.manifest), self.container(self.remote(self.manifest)), False)]
        if latents is not None and self.latents:
            items.append((latents, self.container(self.remote(self.latents)), False))
        return items


def app_arguments(model: str, output: str, *, compute_units: Sequence[str] = ("all",), warmup: int = 1,
                  iters: int = 5, latents: str | None = None, device_kind: str | None = None,
                  exit_when_done: bool = False, stream_frames: int | None = None,
                  trim: bool | Sequence[bool] | None = None) -> list[str]:
    """Launch arguments for the app and the macOS command line (same parser).

    ``stream_frames``/``trim``: stream a clip of that many latent frames through a streaming artifact; ``trim``:
    one flag for the clip, or one per segment of the clip cut at the manifest's ``restart_at`` (``-trim NO,YES``).
    """
    for cu in compute_units:
        if cu not in COMPUTE_UNITS:
            raise UserError(f"unknown compute units '{cu}': choose from {', '.join(COMPUTE_UNITS)}")
    if stream_frames is not None and stream_frames < 1:
        raise UserError(f"--stream-frames must be >= 1, got {stream_frames}")
    args = ["-model", model, "-computeUnits", ",".join(compute_units), "-warmup", str(warmup),
            "-iters", str(iters), "-output", output]
    if latents:
        args += ["-latents", latents]
    if stream_frames is not None:
        args += ["-streamFrames", str(stream_frames)]
    flags = trim_flags(trim)
    if flags is not None:
        args += ["-trim", ",".join("YES" if t else "NO" for t in flags)]
    if device_kind:
        args += ["-deviceKind", device_kind]
    if exit_when_done:
        args += ["-exitWhenDone", "YES"]
    return args


# ----------------------------------------------------------------------------------- command lines (pure)


def xcode_version_command() -> list[str]:
    return ["xcodebuild", "-version"]


def parse_xcode_version(text: str) -> tuple[int, int]:
    """(major, minor) from `xcodebuild -version` output ("Xcode 16.2\\nBuild version 16C5032a")."""
    m = re.search(r"Xcode\s+(\d+)(?:\.(\d+))?", text)
    if not m:
        raise UserError(f"cannot read the Xcode version from `xcodebuild -version`: {text.strip()[:80]!r}; "
                        f"install Xcode 16+ and select it with xcode-select")
    return int(m.group(1)), int(m.group(2) or 0)


def xcodegen_command(project_dir: Path) -> list[str]:
    return ["xcodegen", "generate", "--spec", str(project_dir / "project.yml"), "--project", str(project_dir)]


def xcodebuild_command(project: Path, *, simulator: bool, derived_data: Path,
                       configuration: str = CONFIGURATION, team: str | None = None) -> list[str]:
    """Build the app for any iPhone (signed, automatic provisioning) or for the simulator (unsigned)."""
    cmd = ["xcodebuild", "-project", str(project), "-scheme", SCHEME, "-configuration", configuration,
           "-destination", "generic/platform=iOS Simulator" if simulator else "generic/platform=iOS",
           "-derivedDataPath", str(derived_data), "-quiet"]
    if simulator:
        cmd += ["build", "CODE_SIGNING_ALLOWED=NO"]
    else:
        cmd += ["-allowProvisioningUpdates", "build"]
        if team:
            cmd.append(f"DEVELOPMENT_TEAM={team}")
    return cmd


def built_app(derived_data: Path, *, simulator: bool, configuration: str = CONFIGURATION) -> Path:
    """Where xcodebuild puts the .app."""
    sdk = "iphonesimulator" if simulator else "iphoneos"
    return derived_data / "Build" / "Products" / f"{configuration}-{sdk}" / APP_PRODUCT


def devicectl_list_command(json_out: Path) -> list[str]:
    return ["xcrun", "devicectl", "list", "devices", "--json-output", str(json_out)]


def devicectl_install_command(device: str, app: Path) -> list[str]:
    return ["xcrun", "devicectl", "device", "install", "app", "--device", device, str(app)]


def devicectl_copy_to_command(device: str, source: Path, destination: str, *, replace: bool = False,
                              bundle_id: str = BUNDLE_ID) -> list[str]:
    """Copy a file or directory into the app's data container (destination relative to it)."""
    cmd = ["xcrun", "devicectl", "device", "copy", "to", "--device", device, "--domain-type", "appDataContainer",
           "--domain-identifier", bundle_id, "--source", str(source), "--destination", destination]
    if replace:
        cmd += ["--remove-existing-content", "true"]
    return cmd


def devicectl_copy_from_command(device: str, source: str, destination: Path, *,
                                bundle_id: str = BUNDLE_ID) -> list[str]:
    """Copy a file out of the app's data container (source relative to it)."""
    return ["xcrun", "devicectl", "device", "copy", "from", "--device", device, "--domain-type", "appDataContainer",
            "--domain-identifier", bundle_id, "--source", source, "--destination", str(destination)]


def devicectl_launch_command(device: str, arguments: Sequence[str], *, bundle_id: str = BUNDLE_ID) -> list[str]:
    return ["xcrun", "devicectl", "device", "process", "launch", "--device", device, "--terminate-existing",
            bundle_id, *arguments]


def simctl_list_command() -> list[str]:
    return ["xcrun", "simctl", "list", "--json", "devices", "available"]


def simctl_create_command(name: str = f"{SIMULATOR_NAME} (turbovaed)", device_type: str = SIMULATOR_TYPE) -> list[str]:
    return ["xcrun", "simctl", "create", name, device_type]


def simctl_boot_command(udid: str) -> list[str]:
    """Boot if needed and wait until the simulator is ready."""
    return ["xcrun", "simctl", "bootstatus", udid, "-b"]


def simctl_install_command(udid: str, app: Path) -> list[str]:
    return ["xcrun", "simctl", "install", udid, str(app)]


def simctl_container_command(udid: str, bundle_id: str = BUNDLE_ID) -> list[str]:
    return ["xcrun", "simctl", "get_app_container", udid, bundle_id, "data"]


def simctl_terminate_command(udid: str, bundle_id: str = BUNDLE_ID) -> list[str]:
    return ["xcrun", "simctl", "terminate", udid, bundle_id]


def simctl_launch_command(udid: str, arguments: Sequence[str], bundle_id: str = BUNDLE_ID) -> list[str]:
    return ["xcrun", "simctl", "launch", udid, bundle_id, *arguments]


def swift_bench_command(package_dir: Path, arguments: Sequence[str]) -> list[str]:
    """The same benchmark on this Mac through the Swift package's command line."""
    return ["swift", "run", "-c", "release", "--package-path", str(package_dir), SWIFT_PRODUCT, *arguments]


# ----------------------------------------------------------------------------------- picking a target


@dataclass(frozen=True)
class PhysicalDevice:
    """An iPhone as `xcrun devicectl list devices` reports it."""

    identifier: str
    name: str
    product_type: str
    paired: bool
    connected: bool

    @property
    def is_16_pro(self) -> bool:
        return self.product_type in IPHONE_16_PRO


def pick_device(listing: dict, wanted: str | None = None) -> PhysicalDevice:
    """The iPhone to use from devicectl's JSON: `wanted` (identifier, UDID or name), else the best paired one."""
    phones: list[tuple[PhysicalDevice, set[str]]] = []
    for d in (listing.get("result") or {}).get("devices") or []:
        hw, props, conn = (d.get("hardwareProperties") or {}, d.get("deviceProperties") or {},
                           d.get("connectionProperties") or {})
        if hw.get("platform") != "iOS" or hw.get("reality", "physical") != "physical":
            continue
        if hw.get("deviceType", "iPhone") != "iPhone":
            continue
        ident = d.get("identifier") or hw.get("udid")
        if not ident:
            continue
        dev = PhysicalDevice(identifier=ident, name=props.get("name") or hw.get("marketingName") or ident,
                             product_type=hw.get("productType") or "unknown",
                             paired=conn.get("pairingState", "paired") == "paired",
                             connected=conn.get("tunnelState") == "connected")
        names = {ident, str(hw.get("udid") or ""), dev.name}
        phones.append((dev, {n.lower() for n in names if n}))
    if wanted:
        for dev, names in phones:
            if wanted.lower() in names:
                return dev
        known = ", ".join(f"{d.name} ({d.identifier})" for d, _ in phones) or "none"
        raise UserError(f"iPhone '{wanted}' not found by `xcrun devicectl list devices` (found: {known})")
    paired = [d for d, _ in phones if d.paired]
    if not paired:
        raise UserError("no paired iPhone found by `xcrun devicectl list devices`: connect the iPhone 16 Pro, "
                        "unlock it, trust this Mac and turn on Developer Mode; or pass --simulator")
    return sorted(paired, key=lambda d: (not d.is_16_pro, not d.connected, d.name))[0]


def pick_simulator(listing: dict, device_type: str = SIMULATOR_TYPE, name: str = SIMULATOR_NAME) -> str | None:
    """UDID of an available iPhone 16 Pro simulator: a booted one first, then the newest iOS runtime."""
    best: tuple[tuple, str] | None = None
    for runtime, devices in (listing.get("devices") or {}).items():
        if ".iOS-" not in runtime:
            continue
        version = tuple(int(x) for x in re.findall(r"\d+", runtime.rsplit(".iOS-", 1)[-1]))
        for d in devices:
            if not d.get("isAvailable", True) or not d.get("udid"):
                continue
            if d.get("deviceTypeIdentifier") != device_type and d.get("name") != name:
                continue
            key = (d.get("state") == "Booted", version)
            if best is None or key > best[0]:
                best = (key, d["udid"])
    return best[1] if best else None


# ----------------------------------------------------------------------------------- inputs


def load_artifact(artifact: Path | None) -> tuple[Path, Path, dict]:
    """(artifact, manifest path, manifest) for a Core ML artifact with its manifest beside it."""
    if artifact is None:
        raise UserError("--device iphone16pro needs an artifact: `turbovaed export --target coreml --res 256p`, "
                        "then pass NAME.mlpackage")
    artifact = Path(artifact)
    if artifact.suffix not in (".mlpackage", ".mlmodelc") or not artifact.is_dir():
        raise UserError(f"{artifact} is not a Core ML .mlpackage or .mlmodelc directory: the iPhone runs Core ML; "
                        f"export with `turbovaed export --target coreml`")
    manifest_path = artifact.with_name(f"{artifact.stem}.manifest.json")
    if not manifest_path.is_file():
        raise UserError(f"manifest not found: {manifest_path} (turbovaed export writes it next to the artifact)")
    from turbo_vaed.exporters.manifest import read_manifest

    manifest = read_manifest(manifest_path)  # the one reader/validator (turbovaed.manifest/2, /1 upgraded)
    try:
        shape_in = [int(x) for x in manifest["inputs"][0]["shape"]]
        shape_out = [int(x) for x in manifest["outputs"][0]["shape"]]
        _ = (str(manifest["family"]), int(manifest["width"]), int(manifest["height"]))  # must be present
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise UserError(f"{manifest_path} is not a turbovaed manifest ({type(e).__name__}: {e}); "
                        f"export the artifact again") from None
    if manifest.get("target") not in (None, "coreml"):
        raise UserError(f"{artifact.name} is a {manifest['target']} artifact; --device iphone16pro runs Core ML "
                        f"(turbovaed export --target coreml)")
    if len(shape_in) != 4 or len(shape_out) != 4 or shape_out[1] != 3:
        raise UserError(f"{manifest_path}: expected inputs [T, C, h, w] and outputs [F, 3, H, W], got "
                        f"{shape_in} and {shape_out}; export the artifact again")
    return artifact, manifest_path, manifest


def prepare_latents(path: Path, manifest: dict, out_dir: Path, run_id: str) -> Path:
    """Latents in the artifact's [T, C, h, w] layout as a file the app reads (.npy float32 or raw .bin).

    Accepts turbovaed latents (.safetensors / .pt, (1, C, T, h, w)), .npy ([T, C, h, w] or (1, C, T, h, w)),
    or raw little-endian float16/float32 .bin already in [T, C, h, w].
    """
    import numpy as np

    want = [int(x) for x in manifest["inputs"][0]["shape"]]
    t, c, h, w = want
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latents file not found: {path}")
    if path.suffix == ".bin":
        n = t * c * h * w
        if path.stat().st_size not in (2 * n, 4 * n):
            raise UserError(f"{path} has {path.stat().st_size} bytes; raw latents for {want} need {4 * n} "
                            f"(float32) or {2 * n} (float16)")
        dest = out_dir / f"latents-{run_id}.bin"
        shutil.copyfile(path, dest)
        return dest
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"cannot read {path} as .npy: {e}") from None
    else:
        from turbo_vaed.latents_io import load_latents

        z, _ = load_latents(path)
        arr = z.numpy()
    arr = np.asarray(arr, dtype=np.float32)
    if list(arr.shape) == [1, c, t, h, w]:  # (B, C, T, h, w) -> [T, C, h, w]
        arr = arr[0].transpose(1, 0, 2, 3)
    elif list(arr.shape) == [1, *want]:
        arr = arr[0]
    if list(arr.shape) != want:
        raise UserError(f"latents {path.name} have shape {list(arr.shape)} but the artifact decodes {want} "
                        f"[T, C, h, w] (or (1, {c}, {t}, {h}, {w})): use latents of that size or export with "
                        f"matching --latent-frames/--res")
    dest = out_dir / f"latents-{run_id}.npy"
    np.save(dest, np.ascontiguousarray(arr.astype("<f4")))
    return dest


def prepare_clip_latents(path: Path, manifest: dict, out_dir: Path, run_id: str,
                         frames: int | None = None) -> tuple[Path, int]:
    """A clip to stream, [T, C, h, w] of any T, as float32 .npy; returns (file, T).

    turbovaed latents (.safetensors / .pt, (1, C, T, h, w)) and .npy ([T, C, h, w] or (1, C, T, h, w)) give T
    themselves; raw float16/float32 .bin needs ``frames`` (``--stream-frames``) to be read.
    """
    import numpy as np

    _, c, h, w = (int(x) for x in manifest["inputs"][0]["shape"])
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latents file not found: {path}")
    if path.suffix == ".bin":
        t = int(frames or DEFAULT_STREAM_FRAMES)
        n, size = t * c * h * w, path.stat().st_size
        if size not in (2 * n, 4 * n):
            raise UserError(f"{path} has {size} bytes; raw latents for a clip of {t} latent frames "
                            f"[{t}, {c}, {h}, {w}] need {4 * n} (float32) or {2 * n} (float16): pass --stream-frames T")
        arr = np.fromfile(path, dtype="<f4" if size == 4 * n else "<f2").reshape(t, c, h, w)
    elif path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"cannot read {path} as .npy: {e}") from None
    else:
        from turbo_vaed.latents_io import load_latents

        z, _ = load_latents(path)
        arr = z.numpy()
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 5 and arr.shape[0] == 1 and list(arr.shape[1:2]) + list(arr.shape[3:]) == [c, h, w]:
        arr = arr[0].transpose(1, 0, 2, 3)  # (B, C, T, h, w) -> [T, C, h, w]
    if arr.ndim != 4 or list(arr.shape[1:]) != [c, h, w] or arr.shape[0] < 1:
        raise UserError(f"latents {path.name} have shape {list(arr.shape)}; a clip for this artifact is "
                        f"[T, {c}, {h}, {w}] (or (1, {c}, T, {h}, {w})): use latents of that size or export for it")
    dest = out_dir / f"latents-{run_id}.npy"
    np.save(dest, np.ascontiguousarray(arr.astype("<f4")))
    return dest, int(arr.shape[0])


def stream_request(opts: BenchOptions, manifest: dict, artifact: Path) -> int | None:
    """Latent frames of the clip to stream through a streaming artifact, or None for a whole-chunk run."""
    return stream_clip_frames(opts, manifest, artifact.name)



# ----------------------------------------------------------------------------------- results


def parse_app_results(data: str | Path | dict, *, source: str | None = None, manifest: dict | None = None,
                      simulator: bool | None = None) -> dict:
    """Validate and check the turbovaed.bench/1 JSON written by ios_bench (app, simulator or macOS CLI).

    ``simulator``: True requires simulator results (kind ios-simulator), False forbids them, None accepts any.
    ``manifest``: the artifact's manifest; its family and sizes must match, and its sha256/size fill gaps.
    Simulator results always carry the note that the simulator has no Neural Engine.
    """
    if isinstance(data, Path):
        source = source or str(data)
        if not data.is_file():
            raise UserError(f"results file not found: {data}")
        data = data.read_text()
    source = source or "ios_bench results"
    if isinstance(data, str):
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as e:
            raise UserError(f"{source} is not JSON ({e}): the app may have been stopped while writing; run again") \
                from None
    else:
        doc = json.loads(json.dumps(data))  # own copy
    validate_results(doc, source)
    if doc["tool"]["name"] != "ios_bench":
        raise UserError(f"{source} was written by {doc['tool']['name']}, not ios_bench")
    for r in doc["results"]:
        kind, label = r["device"]["kind"], r["label"]
        if r["runtime"]["name"] != "coreml":
            raise UserError(f"{source}: result {label} ran {r['runtime']['name']}, expected coreml")
        if simulator is True and kind != "ios-simulator":
            raise UserError(f"{source}: expected simulator results, but {label} ran on {kind}")
        if simulator is False and kind == "ios-simulator":
            raise UserError(f"{source}: {label} ran on the simulator, not on an iPhone")
        if kind == "ios-simulator" and "no Neural Engine" not in (r.get("notes") or ""):
            r["notes"] = "; ".join(n for n in (r.get("notes"), SIMULATOR_NOTE) if n)
        if manifest is not None:
            _check_against_manifest(r, manifest, source)
    return validate_results(doc, source)


def _check_against_manifest(result: dict, manifest: dict, source: str) -> None:
    m = result["model"]
    t, c, h, w = (int(x) for x in manifest["inputs"][0]["shape"])
    expected = {"family": manifest["family"], "width": int(manifest["width"]), "height": int(manifest["height"]),
                "output_frames": int(manifest["outputs"][0]["shape"][0]), "latent_shape": [1, c, t, h, w]}
    stream = result.get("stream")
    if stream or manifest.get("stream"):
        if not (stream and manifest.get("stream")):
            raise UserError(f"{source}: {result['label']} is {'a streamed' if stream else 'a whole-chunk'} result "
                            f"for a {'streaming' if manifest.get('stream') else 'whole-chunk'} artifact: the app ran a "
                            "different artifact; run again")
        if int(stream["chunk_latent_frames"]) != t:
            raise UserError(f"{source}: {result['label']} streamed chunks of {stream['chunk_latent_frames']} latent "
                            f"frames, the artifact's manifest says {t}: run again")
        # a streamed clip: the whole clip's latents and frames (as turbovaed bench --stream on the host)
        expected.update(output_frames=int(stream["frames"]), latent_shape=[1, c, int(stream["latent_frames"]), h, w])
    for key, want in expected.items():
        if m[key] != want:
            raise UserError(f"{source}: {result['label']} has model.{key} {m[key]}, but the artifact's manifest "
                            f"says {want}: the app ran a different artifact; run again")
    sha = manifest.get("sha256")
    if not m.get("artifact_sha256") and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha):
        m["artifact_sha256"] = sha
    if m.get("artifact_bytes") is None and isinstance(manifest.get("size_bytes"), int):
        m["artifact_bytes"] = manifest["size_bytes"]


def check_matches_run(doc: dict, run: AppRun, source: str) -> None:
    """The results are for the run asked for: compute units in order, warm-up and iterations."""
    units = [r["runtime"].get("compute_units") for r in doc["results"]]
    if units != list(run.compute_units):
        raise UserError(f"{source}: results are for compute units {units}, asked for {list(run.compute_units)}")
    for r in doc["results"]:
        if run.stream_frames is not None:  # one clip after loading: warm-up/iterations do not apply
            got = (r.get("stream") or {}).get("latent_frames")
            if got != run.stream_frames:
                raise UserError(f"{source}: {r['label']} streamed {got} latent frames, asked for a clip of "
                                f"{run.stream_frames}")
            continue
        s = r["settings"]
        if (s["warmup"], s["iterations"]) != (run.warmup, run.iters):
            raise UserError(f"{source}: {r['label']} ran warmup {s['warmup']} / iterations {s['iterations']}, "
                            f"asked for {run.warmup} / {run.iters}")


# ----------------------------------------------------------------------------------- macOS steps


def require_xcode() -> tuple[int, int]:
    """Xcode version, or a UserError when there is none or it is older than 16."""
    version = parse_xcode_version(_check(_run(xcode_version_command()), "`xcodebuild -version`"))
    if version < MIN_XCODE:
        raise UserError(f"Xcode {version[0]}.{version[1]} is too old: --device iphone16pro needs Xcode "
                        f"{MIN_XCODE[0]}+ (iOS 18 SDK); install it and select it with xcode-select")
    return version


def ensure_project(project_dir: Path) -> Path:
    """The Xcode project, (re)generated from project.yml with XcodeGen when it is installed."""
    xcodeproj = project_dir / f"{PROJECT}.xcodeproj"
    if (project_dir / "project.yml").is_file() and shutil.which("xcodegen"):
        _check(_run(xcodegen_command(project_dir), timeout=300), "xcodegen generate")
    if not xcodeproj.exists():
        raise UserError(f"{xcodeproj} does not exist and xcodegen is not installed: `brew install xcodegen` "
                        f"(it generates the project from ios_bench/project.yml)")
    return xcodeproj


def build_app(project: Path, *, simulator: bool, derived_data: Path, team: str | None) -> Path:
    _check(_run(xcodebuild_command(project, simulator=simulator, derived_data=derived_data, team=team),
                timeout=1800),
           "xcodebuild (for a device: open ios_bench in Xcode once and pick a signing team, or set "
           f"{ENV_TEAM})" if not simulator else "xcodebuild for the simulator")
    app = built_app(derived_data, simulator=simulator)
    if not app.is_dir():
        raise UserError(f"xcodebuild finished but {app} is missing")
    return app


def _wait_for(fetch_output, fetch_error, timeout: float, where: str) -> Path:
    """Poll until the app wrote its JSON (returned) or its error file (raised), or time runs out."""
    deadline = _clock() + timeout
    while True:
        out = fetch_output()
        if out is not None:
            return out
        err = fetch_error()
        if err is not None:
            raise UserError(f"ios_bench on {where} failed: {err}")
        if _clock() >= deadline:
            raise UserError(f"no results from ios_bench on {where} after {timeout:.0f} s: keep the phone unlocked "
                            f"and the app in front, or raise {ENV_TIMEOUT}")
        _sleep(POLL_S)


def run_on_device(app: Path, artifact: Path, latents: Path | None, run: AppRun, work: Path,
                  wanted: str | None, timeout: float) -> tuple[Path, PhysicalDevice]:
    """Install, copy inputs, launch and fetch the JSON from a connected iPhone (xcrun devicectl)."""
    listing_path = work / "devices.json"
    _check(_run(devicectl_list_command(listing_path), timeout=120), "xcrun devicectl list devices")
    try:
        listing = json.loads(listing_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError("xcrun devicectl list devices wrote no readable JSON; update Xcode to 16+") from None
    device = pick_device(listing, wanted)
    ident = device.identifier
    _check(_run(devicectl_install_command(ident, app), timeout=600), f"installing the app on {device.name}")
    for local, remote, replace in run.uploads(artifact, latents):
        _check(_run(devicectl_copy_to_command(ident, local, remote, replace=replace), timeout=600),
               f"copying {local.name} to {device.name}")
    _check(_run(devicectl_launch_command(ident, run.launch_arguments()), timeout=120),
           f"launching the app on {device.name} (unlock the phone)")
    out, err = work / "results.json", work / "results.json.error"

    def fetch(source: str, dest: Path) -> Path | None:
        proc = _run(devicectl_copy_from_command(ident, AppRun.container(source), dest), timeout=120)
        return dest if proc.returncode == 0 and dest.is_file() else None

    def fetch_error() -> str | None:
        got = fetch(run.error, err)
        return got.read_text().strip() if got else None

    return _wait_for(lambda: fetch(run.output, out), fetch_error, timeout, device.name), device


def run_on_simulator(app: Path, artifact: Path, latents: Path | None, run: AppRun,
                     timeout: float) -> tuple[Path, str]:
    """Boot an iPhone 16 Pro simulator, install, copy inputs into the container, launch, read the JSON."""
    listing = json.loads(_check(_run(simctl_list_command(), timeout=120), "xcrun simctl list"))
    udid = pick_simulator(listing)
    if udid is None:
        udid = _check(_run(simctl_create_command(), timeout=300),
                      "creating an iPhone 16 Pro simulator (install an iOS 18 simulator runtime in "
                      "Xcode > Settings > Components)").strip()
    _check(_run(simctl_boot_command(udid), timeout=600), "booting the iPhone 16 Pro simulator")
    _check(_run(simctl_install_command(udid, app), timeout=600), "installing the app on the simulator")
    container = Path(_check(_run(simctl_container_command(udid), timeout=60), "finding the app's container").strip())
    for local, remote, _ in run.uploads(artifact, latents):
        dest = container / remote
        dest.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(local, dest)
        else:
            shutil.copyfile(local, dest)
    _run(simctl_terminate_command(udid), timeout=60)  # fails when it is not running: fine
    _check(_run(simctl_launch_command(udid, run.launch_arguments()), timeout=120), "launching the app on the simulator")
    out, err = container / AppRun.container(run.output), container / AppRun.container(run.error)
    path = _wait_for(lambda: out if out.is_file() else None,
                     lambda: err.read_text().strip() if err.is_file() else None, timeout, "the simulator")
    return path, udid


def _timeout() -> float:
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        return max(0.0, float(text))
    except ValueError:
        raise UserError(f"{ENV_TIMEOUT}={text!r} is not a number of seconds") from None


def bench_iphone(opts: BenchOptions) -> dict:
    """Run ios_bench on a connected iPhone (or the simulator with ``opts.simulator``); validated results."""
    if not _host_is_macos():
        raise UserError(OFF_MACOS)
    if opts.runtimes and set(opts.runtimes) != {"coreml"}:
        raise UserError("--device iphone16pro runs Core ML only: drop --runtime or pass --runtime coreml")
    artifact, _, manifest = load_artifact(opts.artifact)
    require_xcode()
    timeout = _timeout()
    work_root = Path(opts.out_dir) / "ios"
    work_root.mkdir(parents=True, exist_ok=True)
    project = ensure_project(IOS_BENCH_DIR)
    app = build_app(project, simulator=opts.simulator, derived_data=work_root / "DerivedData",
                    team=os.environ.get(ENV_TEAM))
    run_id = uuid.uuid4().hex[:10]
    stream_frames = stream_request(opts, manifest, artifact)
    with tempfile.TemporaryDirectory(prefix="turbovaed-ios-") as tmp:
        work = Path(tmp)
        latents, stream_frames = _latents_for_run(opts, manifest, work, run_id, stream_frames)
        trim = stream_segment_trims(manifest, stream_frames) if stream_frames else None
        run = AppRun(run_id=run_id, model=artifact.name, compute_units=tuple(opts.compute_units),
                     warmup=opts.warmup, iters=opts.iters, latents=latents.name if latents else None,
                     device_kind="ios-simulator" if opts.simulator else "iphone16pro", stream_frames=stream_frames,
                     trim=trim)
        if opts.simulator:
            path, where = run_on_simulator(app, artifact, latents, run, timeout)
        else:
            path, device = run_on_device(app, artifact, latents, run, work,
                                         opts.serial or os.environ.get(ENV_DEVICE), timeout)
            where = device.name
        source = f"results from {where}"
        doc = parse_app_results(path.read_text(), source=source, manifest=manifest, simulator=opts.simulator)
        check_matches_run(doc, run, source)
    from turbo_vaed.jsonio import write_json

    write_json(work_root / f"{artifact.stem}-{'simulator' if opts.simulator else 'iphone'}-{run_id}.json", doc)
    return doc


def _latents_for_run(opts: BenchOptions, manifest: dict, work: Path, run_id: str,
                     stream_frames: int | None) -> tuple[Path | None, int | None]:
    """The latents file to copy (or None: the app's seeded random latents) and the clip length of a stream."""
    if not opts.latents:
        return None, stream_frames
    if stream_frames is None:
        return prepare_latents(opts.latents, manifest, work, run_id), None
    return prepare_clip_latents(opts.latents, manifest, work, run_id, stream_frames)


def bench_mac_swift(opts: BenchOptions) -> dict:
    """The ios_bench library on this Mac (`swift run turbovaed-ios-bench`): the same JSON path as the iPhone."""
    if not _host_is_macos():
        raise UserError("the Swift benchmark needs macOS with Xcode 16+; here use `turbovaed bench --device host`")
    artifact, _, manifest = load_artifact(opts.artifact)
    work_root = Path(opts.out_dir) / "mac"
    work_root.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:10]
    output = (work_root / f"{artifact.stem}-mac-{run_id}.json").resolve()
    stream_frames = stream_request(opts, manifest, artifact)
    with tempfile.TemporaryDirectory(prefix="turbovaed-mac-") as tmp:
        latents, stream_frames = _latents_for_run(opts, manifest, Path(tmp), run_id, stream_frames)
        trim = stream_segment_trims(manifest, stream_frames) if stream_frames else None
        args = app_arguments(str(artifact.resolve()), str(output), compute_units=opts.compute_units,
                             warmup=opts.warmup, iters=opts.iters, latents=str(latents) if latents else None,
                             device_kind="mac", stream_frames=stream_frames, trim=trim)
        _check(_run(swift_bench_command(IOS_BENCH_DIR, args), timeout=_timeout()), "swift run turbovaed-ios-bench")
    run = AppRun(run_id=run_id, model=artifact.name, compute_units=tuple(opts.compute_units), warmup=opts.warmup,
                 iters=opts.iters, stream_frames=stream_frames)
    doc = parse_app_results(output, manifest=manifest, simulator=False)
    check_matches_run(doc, run, str(output))
    return doc
