"""``turbovaed bench --device android``: run android_bench on a phone or emulator through adb.

Flow: check the artifact and its manifest -> find adb -> pick the device -> get the APK (prebuilt, or built
with Gradle where an Android SDK exists) -> push model + manifest (+ latents) to /data/local/tmp/turbovaed ->
install -> ``am start`` with extras -> poll for the result file -> pull -> validate (turbovaed.bench/1).
Every adb/gradle command line is built by a pure function below, so tests can check them without a device.

A streaming artifact (``turbovaed export --stream``, manifest ``stream`` section) is streamed by the app over a
whole clip (``--ei stream_frames N --ei trim 0|1``; ``--stream-frames``, default 21 latent frames, or the
``--latents`` file's length); the result then has the ``stream`` object of the schema.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from turbo_vaed.bench.options import (
    DEFAULT_CLIP_LATENT_FRAMES,
    EXPORT_TARGET,
    BenchOptions,
    stream_clip_frames,
    stream_segment_trims,
    trim_flags,
)
from turbo_vaed.bench.schema import load_results
from turbo_vaed.errors import UserError
from turbo_vaed.targets import runtime_of_suffix

APP_ID = "dev.turbovaed.bench"
ACTIVITY = f"{APP_ID}/.BenchActivity"
REMOTE_DIR = "/data/local/tmp/turbovaed"
# getExternalFilesDir(null) of the app for user 0, as adb sees it
RESULTS_DIR = f"/sdcard/Android/data/{APP_ID}/files"
ERROR_SUFFIX = ".error"
LOG_TAG = "TurboVAEDBench"
DONE_MARKER = "TURBOVAED_BENCH_DONE"
APK_ENV = "TURBOVAED_ANDROID_APK"
TIMEOUT_ENV = "TURBOVAED_ANDROID_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 900.0
DEFAULT_STREAM_FRAMES = DEFAULT_CLIP_LATENT_FRAMES  # one default for host, iPhone and Android
GONE_POLLS = 5  # polls (about a second apart) without the app process before the run counts as crashed
ANDROID_BENCH_DIR = Path(__file__).resolve().parents[2] / "android_bench"
ANDROID_RUNTIMES = ("executorch", "onnxruntime")  # what the Kotlin harness links
RUNTIME_BY_SUFFIX = {s: rt for s, rt in runtime_of_suffix().items() if rt in ANDROID_RUNTIMES}
TARGET_BY_RUNTIME = {rt: EXPORT_TARGET[rt][0] for rt in ANDROID_RUNTIMES}

Runner = Callable[[Sequence[str], float], subprocess.CompletedProcess]


@dataclass(frozen=True)
class AdbDevice:
    """One line of ``adb devices -l``: serial, state (device, offline, unauthorized, ...) and key:value details."""

    serial: str
    state: str
    details: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        model = self.details.get("model")
        return f"{self.serial} ({self.state}{', ' + model if model else ''})"


@dataclass(frozen=True)
class Artifact:
    """The local model file, its manifest and the runtime that runs it."""

    path: Path
    manifest_path: Path
    manifest: dict
    runtime: str

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.manifest["inputs"][0]["shape"]]


# ---------------------------------------------------------------- pure helpers: parsing and command lines


def parse_devices(text: str) -> list[AdbDevice]:
    """Parse ``adb devices -l`` output (ignores the header and daemon start-up chatter)."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "adb: ")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, rest = parts[0], parts[1:]
        # the state may be several words ("no permissions (...) see [...]"): all words before the first key:value
        state_words: list[str] = []
        details: dict[str, str] = {}
        for tok in rest:
            if state_words and re.match(r"^[a-z_]+:", tok):
                k, v = tok.split(":", 1)
                details[k] = v
            elif not details:
                state_words.append(tok)
        devices.append(AdbDevice(serial, " ".join(state_words) or "unknown", details))
    return devices


def describe_devices(devices: Sequence[AdbDevice]) -> str:
    if not devices:
        return "`adb devices -l` listed no devices"
    return "`adb devices -l` listed " + ", ".join(d.describe() for d in devices)


def pick_device(devices: Sequence[AdbDevice], serial: str | None) -> AdbDevice:
    """The device to use: the one named by ``serial``, else the only one that is ready; one-line errors."""
    if serial:
        match = [d for d in devices if d.serial == serial]
        if not match:
            raise UserError(f"no Android device with serial {serial}: {describe_devices(devices)}")
        d = match[0]
        if d.state != "device":
            raise UserError(f"Android device {serial} is {d.state}: {_state_hint(d.state)}")
        return d
    ready = [d for d in devices if d.state == "device"]
    if not ready:
        hint = _state_hint(devices[0].state) if devices else (
            "connect a phone with USB debugging on, or start an emulator, then retry")
        raise UserError(f"no Android device ready: {describe_devices(devices)}; {hint}")
    if len(ready) > 1:
        raise UserError(f"several Android devices attached ({', '.join(d.serial for d in ready)}): "
                        "pick one with --serial")
    return ready[0]


def _state_hint(state: str) -> str:
    if state == "unauthorized":
        return "unlock the phone and accept the USB debugging prompt"
    if state == "offline":
        return "reconnect it, or restart adb with `adb kill-server`"
    if state.startswith("no permissions"):
        return "add a udev rule for the phone (or run adb as root), then replug it"
    return "wait until `adb devices` shows it as 'device'"


def remote_names(artifact: Path) -> dict[str, str]:
    """Paths on the device for the model, its manifest and pushed latents."""
    stem = artifact.name[: -len(artifact.suffix)] if artifact.suffix else artifact.name
    return {
        "model": f"{REMOTE_DIR}/{artifact.name}",
        "manifest": f"{REMOTE_DIR}/{stem}.manifest.json",
        "latents": f"{REMOTE_DIR}/{stem}.latents.f32",
    }


def result_name(artifact: Path, runtime: str, stamp: int) -> str:
    """A fresh results file name (plain: no '/', no leading dot) so a stale file is never read."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", artifact.stem).lstrip(".") or "model"
    return f"turbovaed-{stem}-{runtime}-{stamp}.json"


def adb_cmd(adb: str, serial: str, *args: str) -> list[str]:
    return [adb, "-s", serial, *args]


def devices_cmd(adb: str) -> list[str]:
    return [adb, "devices", "-l"]


def mkdir_cmd(adb: str, serial: str, remote_dir: str = REMOTE_DIR) -> list[str]:
    return adb_cmd(adb, serial, "shell", "mkdir", "-p", shlex.quote(remote_dir))


def push_cmd(adb: str, serial: str, local: Path, remote: str) -> list[str]:
    # adb push takes paths as they are (no remote shell), so no quoting here
    return adb_cmd(adb, serial, "push", str(local), remote)


def chmod_cmd(adb: str, serial: str, *remote: str) -> list[str]:
    """Make pushed files readable by the app's uid."""
    return adb_cmd(adb, serial, "shell", "chmod", "644", *(shlex.quote(r) for r in remote))


def install_cmd(adb: str, serial: str, apk: Path) -> list[str]:
    return adb_cmd(adb, serial, "install", "-r", "-t", str(apk))


def uninstall_cmd(adb: str, serial: str) -> list[str]:
    return adb_cmd(adb, serial, "uninstall", APP_ID)


def start_cmd(adb: str, serial: str, *, model: str, runtime: str, iters: int, warmup: int, output: str,
              threads: int | None = None, latents: str | None = None, manifest: str | None = None,
              ep: str | None = None, stream_frames: int | None = None,
              trim: bool | Sequence[bool] | None = None) -> list[str]:
    """``am start`` of BenchActivity with its extras; -S stops a running instance so each run is a cold start.

    No -W: on a locked phone the launch never completes, while the run itself goes on; the poll follows it.
    ``adb shell`` joins its arguments into one remote shell line, so string values are shell-quoted.
    ``stream_frames``/``trim``: a streaming artifact streams a clip of that many latent frames; ``trim``: one flag
    for the clip (``--ei trim 0|1``), or one per segment of the clip cut at the manifest's ``restart_at``
    (``--es trim 1,0``, when there are several).
    """
    cmd = adb_cmd(adb, serial, "shell", "am", "start", "-S", "-n", ACTIVITY,
                  "--es", "model", shlex.quote(model), "--es", "runtime", runtime,
                  "--ei", "iters", str(iters), "--ei", "warmup", str(warmup))
    if threads is not None:
        cmd += ["--ei", "threads", str(threads)]
    cmd += ["--es", "output", shlex.quote(output)]
    if latents is not None:
        cmd += ["--es", "latents", shlex.quote(latents)]
    if manifest is not None:
        cmd += ["--es", "manifest", shlex.quote(manifest)]
    if ep is not None:
        cmd += ["--es", "ep", shlex.quote(ep)]
    if stream_frames is not None:
        if stream_frames < 1:
            raise UserError(f"--stream-frames must be >= 1, got {stream_frames}")
        cmd += ["--ei", "stream_frames", str(stream_frames)]
    flags = trim_flags(trim)
    if flags is not None:
        cmd += ["--ei" if len(flags) == 1 else "--es", "trim", ",".join("1" if t else "0" for t in flags)]
    return cmd


def poll_cmd(adb: str, serial: str, remote_result: str) -> list[str]:
    """Prints done / failed / running / gone: result file, error file, app process alive, or none of these."""
    r, e = shlex.quote(remote_result), shlex.quote(remote_result + ERROR_SUFFIX)
    script = (f"if [ -f {r} ]; then echo done; elif [ -f {e} ]; then echo failed; "
              f"elif pidof {APP_ID} >/dev/null; then echo running; else echo gone; fi")
    return adb_cmd(adb, serial, "shell", script)


def cat_cmd(adb: str, serial: str, remote: str) -> list[str]:
    return adb_cmd(adb, serial, "exec-out", "cat", shlex.quote(remote))


def pull_cmd(adb: str, serial: str, remote: str, local: Path) -> list[str]:
    return adb_cmd(adb, serial, "pull", remote, str(local))


def run_as_cat_cmd(adb: str, serial: str, remote: str) -> list[str]:
    """Fallback read of the app's own file (debuggable builds) where shell cannot read Android/data."""
    return adb_cmd(adb, serial, "exec-out", "run-as", APP_ID, "cat", shlex.quote(remote))


def rm_cmd(adb: str, serial: str, *remote: str) -> list[str]:
    return adb_cmd(adb, serial, "shell", "rm", "-f", *(shlex.quote(r) for r in remote))


def force_stop_cmd(adb: str, serial: str) -> list[str]:
    return adb_cmd(adb, serial, "shell", "am", "force-stop", APP_ID)


def logcat_cmd(adb: str, serial: str) -> list[str]:
    return adb_cmd(adb, serial, "logcat", "-d", "-s", f"{LOG_TAG}:*", "AndroidRuntime:E")


def apk_path(bench_dir: Path = ANDROID_BENCH_DIR, build_type: str = "release") -> Path:
    return bench_dir / "app" / "build" / "outputs" / "apk" / build_type / f"app-{build_type}.apk"


def gradle_cmd(bench_dir: Path, gradle: str, build_type: str = "release") -> list[str]:
    task = f":app:assemble{build_type.capitalize()}"
    return [gradle, "-p", str(bench_dir), task, "--console=plain"]


def find_gradle(bench_dir: Path, which: Callable[[str], str | None] = shutil.which) -> str | None:
    wrapper = bench_dir / "gradlew"
    if wrapper.is_file() and os.access(wrapper, os.X_OK):
        return str(wrapper)
    return which("gradle")


def apk_is_stale(apk: Path, bench_dir: Path) -> bool:
    """True when the APK is missing or older than any source or build file of android_bench."""
    if not apk.is_file():
        return True
    built = apk.stat().st_mtime
    sources = [*(bench_dir / "app" / "src").rglob("*"), *bench_dir.glob("*.kts"), *bench_dir.glob("app/*.kts"),
               bench_dir / "gradle.properties"]
    return any(p.is_file() and p.stat().st_mtime > built for p in sources)


def find_adb(which: Callable[[str], str | None] = shutil.which) -> str:
    adb = which("adb")
    if not adb:
        raise UserError("adb not found on PATH: install it (Debian/Ubuntu: `apt-get install adb`; or the Android SDK "
                        "platform-tools) and retry")
    return adb


def check_artifact(opts: BenchOptions) -> Artifact:
    """The artifact, its manifest and runtime; one-line errors before any device work."""
    if opts.artifact is None:
        raise UserError("--device android needs an exported artifact: `turbovaed bench --device android "
                        "out/model.pte` (export one with `turbovaed export --target executorch|onnx`)")
    path = Path(opts.artifact)
    if not path.is_file():
        raise UserError(f"artifact not found: {path}; export one with `turbovaed export`")
    runtime = RUNTIME_BY_SUFFIX.get(path.suffix.lower())
    if runtime is None:
        raise UserError(f"{path.name} cannot run on Android: pass a .pte (ExecuTorch) or .onnx/.ort (ONNX Runtime)")
    if opts.runtimes and set(opts.runtimes) != {runtime}:
        raise UserError(f"{path.name} runs with {runtime} on Android, not {', '.join(opts.runtimes)}: "
                        f"drop --runtime or pass the matching artifact")
    stem = path.name[: -len(path.suffix)]
    manifest_path = path.with_name(f"{stem}.manifest.json")
    if not manifest_path.is_file():
        raise UserError(f"manifest not found: {manifest_path}; `turbovaed export` writes it next to the artifact")
    from turbo_vaed.exporters.manifest import read_manifest

    manifest = read_manifest(manifest_path)  # the one reader/validator (turbovaed.manifest/2, /1 upgraded)
    try:
        shape = manifest["inputs"][0]["shape"]
        target = manifest["target"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
        raise UserError(f"{manifest_path} is not a turbovaed manifest ({type(e).__name__}: {e}); "
                        "export again") from None
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise UserError(f"{manifest_path}: inputs[0].shape must be [T, C, h, w], got {shape}; export again")
    if target != TARGET_BY_RUNTIME[runtime]:
        raise UserError(f"{manifest_path} says target {target}, but {path.name} needs {TARGET_BY_RUNTIME[runtime]}")
    if runtime == "executorch" and manifest.get("delegate") not in (None, "xnnpack"):
        raise UserError(f"{path.name} uses the {manifest['delegate']} delegate, which Android's ExecuTorch lacks: "
                        "export with `--target executorch` and the default XNNPACK delegate")
    return Artifact(path, manifest_path, manifest, runtime)


def resolve_apk(opts: BenchOptions, env: Mapping[str, str], bench_dir: Path = ANDROID_BENCH_DIR,
                which: Callable[[str], str | None] = shutil.which) -> tuple[Path, list[str] | None]:
    """The APK to install and the Gradle command that must build it first (None: use as is)."""
    given = opts.extra.get("apk") or env.get(APK_ENV)
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            raise UserError(f"APK not found: {p} (from {'opts' if opts.extra.get('apk') else APK_ENV})")
        return p, None
    sdk = env.get("ANDROID_HOME") or env.get("ANDROID_SDK_ROOT")
    if not sdk or not Path(sdk).is_dir():
        raise UserError(f"no Android bench app to install: set ANDROID_HOME to an Android SDK so turbovaed can build "
                        f"android_bench with Gradle, or set {APK_ENV} to a prebuilt APK (see android_bench/README.md)")
    if not (bench_dir / "settings.gradle.kts").is_file():
        raise UserError(f"android_bench sources not found at {bench_dir}: run from a turbovaed checkout, "
                        f"or set {APK_ENV} to a prebuilt APK")
    build_type = opts.extra.get("build_type", "release")
    apk = apk_path(bench_dir, build_type)
    if not apk_is_stale(apk, bench_dir):
        return apk, None
    gradle = find_gradle(bench_dir, which)
    if gradle is None:
        raise UserError("cannot build android_bench: no ./gradlew in android_bench and no gradle on PATH; create the "
                        f"wrapper as android_bench/README.md says, or set {APK_ENV} to a prebuilt APK")
    return apk, gradle_cmd(bench_dir, gradle, build_type)


def write_latents_f32(src: Path, shape: Sequence[int], dest: Path) -> Path:
    """Latents file (B, C, T, h, w) -> raw little-endian float32 [T, C, h, w] that the app reads."""
    import numpy as np

    from turbo_vaed.latents_io import load_latents

    z, _ = load_latents(src)
    t, c, h, w = shape
    if z.dim() != 5 or z.shape[0] != 1 or tuple(z.shape[1:]) != (c, t, h, w):
        raise UserError(f"latents {src} have shape {tuple(z.shape)}; the artifact needs (1, {c}, {t}, {h}, {w})")
    arr = z[0].permute(1, 0, 2, 3).contiguous().numpy().astype("<f4", copy=False)
    dest.write_bytes(np.ascontiguousarray(arr).tobytes())
    return dest


def write_clip_latents_f32(src: Path, frame_shape: Sequence[int], dest: Path) -> tuple[Path, int]:
    """Latents (1, C, T, h, w) of any T -> raw little-endian float32 [T, C, h, w] to stream; returns (file, T)."""
    import numpy as np

    from turbo_vaed.latents_io import load_latents

    z, _ = load_latents(src)
    c, h, w = frame_shape
    if z.dim() != 5 or z.shape[0] != 1 or (z.shape[1], z.shape[3], z.shape[4]) != (c, h, w):
        raise UserError(f"latents {src} have shape {tuple(z.shape)}; a clip for the artifact is (1, {c}, T, {h}, {w})")
    arr = z[0].permute(1, 0, 2, 3).contiguous().numpy().astype("<f4", copy=False)
    dest.write_bytes(np.ascontiguousarray(arr).tobytes())
    return dest, int(arr.shape[0])


def stream_request(opts: BenchOptions, art: Artifact) -> int | None:
    """Latent frames of the clip to stream through a streaming artifact, or None for a whole-chunk run."""
    return stream_clip_frames(opts, art.manifest, art.path.name)



def check_stream_result(doc: dict, clip_latent_frames: int, source: str) -> None:
    """Every result of a streamed run has the ``stream`` object for the clip asked for."""
    for r in doc["results"]:
        got = (r.get("stream") or {}).get("latent_frames")
        if got != clip_latent_frames:
            raise UserError(f"{source}: {r['label']} streamed {got} latent frames, asked for a clip of "
                            f"{clip_latent_frames}: install the current android_bench and run again")


# ---------------------------------------------------------------- running commands


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Adb:
    """Runs adb commands for one device; failures become one-line UserErrors."""

    def __init__(self, adb: str, serial: str, run: Runner = _run) -> None:
        self.adb, self.serial, self._run = adb, serial, run

    def __call__(self, cmd: Sequence[str], what: str, timeout: float = 120.0) -> str:
        try:
            res = self._run(cmd, timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what} timed out after {timeout:.0f} s: `{shlex.join(cmd)}`") from None
        out = (res.stdout or "") + (res.stderr or "")
        # `adb shell am start` exits 0 even when the activity is missing: look for its error lines too
        err = next((ln.strip() for ln in out.splitlines() if ln.strip().startswith(("Error:", "Exception"))), "")
        if res.returncode != 0 or err:
            raise UserError(f"{what} failed on {self.serial}: {err or _last_line(out) or f'exit {res.returncode}'}")
        return res.stdout or ""


def list_devices(adb: str, run: Runner = _run) -> list[AdbDevice]:
    """``adb devices -l`` (starts the adb server on loopback if it is not running)."""
    try:
        res = run(devices_cmd(adb), 60.0)
    except subprocess.TimeoutExpired:
        raise UserError("`adb devices -l` timed out: restart the server with `adb kill-server` and retry") from None
    if res.returncode != 0:
        msg = _last_line((res.stderr or "") + "\n" + (res.stdout or "")) or f"exit {res.returncode}"
        raise UserError(f"`adb devices -l` failed: {msg}")
    return parse_devices(res.stdout or "")


def _gradle_error(output: str) -> str:
    lines = output.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("* What went wrong:"):
            rest = [x.strip() for x in lines[i + 1:i + 4] if x.strip()]
            return " ".join(rest)[:400]
    return _last_line(output)


def build_apk(cmd: Sequence[str], apk: Path, run: Runner = _run, timeout: float = 1800.0) -> Path:
    try:
        res = run(cmd, timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"Gradle build of android_bench timed out after {timeout:.0f} s: `{shlex.join(cmd)}`") from None
    if res.returncode != 0:
        why = _gradle_error((res.stdout or "") + (res.stderr or ""))
        raise UserError(f"Gradle build of android_bench failed: {why} (run `{shlex.join(cmd)}` to see the whole log)")
    if not apk.is_file():
        raise UserError(f"Gradle finished but {apk} is missing: run `{shlex.join(cmd)}` and check its output")
    return apk


def wait_for_result(adb: Adb, remote_result: str, timeout_s: float, poll_s: float = 1.0,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll until the app writes the result (returns) or its error file / dies / times out (UserError)."""
    deadline = clock() + timeout_s
    gone = 0
    while True:
        state = _last_line(adb(poll_cmd(adb.adb, adb.serial, remote_result), "checking for the result", 60.0))
        if state == "done":
            return
        if state == "failed":
            msg = _last_line(adb(cat_cmd(adb.adb, adb.serial, remote_result + ERROR_SUFFIX), "reading the error"))
            raise UserError(f"android_bench failed on {adb.serial}: {msg or 'no message'}")
        # "gone" several polls in a row: the process died (crash, killed for memory) without writing anything
        gone = gone + 1 if state == "gone" else 0
        if gone >= GONE_POLLS:
            raise UserError(f"android_bench stopped on {adb.serial} without writing a result: see "
                            f"`{shlex.join(logcat_cmd(adb.adb, adb.serial))}`")
        if clock() > deadline:
            raise UserError(f"no result from android_bench on {adb.serial} after {timeout_s:.0f} s: see "
                            f"`{shlex.join(logcat_cmd(adb.adb, adb.serial))}`, or raise {TIMEOUT_ENV}")
        sleep(poll_s)


def fetch_result(adb: Adb, remote_result: str, local: Path) -> dict:
    """Pull the results JSON (run-as cat as a fallback), then validate it."""
    try:
        adb(pull_cmd(adb.adb, adb.serial, remote_result, local), "pulling the result")
    except UserError as pull_error:
        try:
            local.write_text(adb(run_as_cat_cmd(adb.adb, adb.serial, remote_result), "reading the result"))
        except UserError:
            raise pull_error from None
    return load_results(local)


# ---------------------------------------------------------------- the driver


def _timeout(opts: BenchOptions, env: Mapping[str, str]) -> float:
    raw = opts.extra.get("timeout_s") or env.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def bench_android(opts: BenchOptions, run: Runner = _run, env: Mapping[str, str] | None = None,
                  which: Callable[[str], str | None] = shutil.which) -> dict:
    """Benchmark an exported artifact on an Android phone/emulator; returns a validated turbovaed.bench/1 doc."""
    env = os.environ if env is None else env
    art = check_artifact(opts)
    stream_frames = stream_request(opts, art)  # None: a whole-chunk run
    if opts.latents is not None and not Path(opts.latents).is_file():
        raise UserError(f"latents file not found: {opts.latents}; make one with `turbovaed encode`")
    if opts.threads is not None and opts.threads < 1:
        raise UserError(f"--threads must be >= 1, got {opts.threads} (leave it out to let the runtime choose)")
    timeout_s = _timeout(opts, env)
    adb_path = find_adb(which)
    device = pick_device(list_devices(adb_path, run), opts.serial or env.get("ANDROID_SERIAL"))
    apk, build = resolve_apk(opts, env, opts.extra.get("bench_dir", ANDROID_BENCH_DIR), which)
    from rich.console import Console

    log = Console(stderr=True, highlight=False, soft_wrap=True)
    if build is not None:
        log.print(f"[dim]building android_bench: {shlex.join(build)} (the first build downloads Gradle deps)[/]")
        build_apk(build, apk, run)
    adb = Adb(adb_path, device.serial, run)
    remote = remote_names(art.path)

    with tempfile.TemporaryDirectory(prefix="turbovaed-android-") as tmp:
        log.print(f"[dim]{device.describe()}: pushing {art.path.name} to {REMOTE_DIR}[/]")
        adb(mkdir_cmd(adb_path, device.serial), "creating " + REMOTE_DIR)
        pushed = [remote["model"], remote["manifest"]]
        adb(push_cmd(adb_path, device.serial, art.path, remote["model"]), "pushing the artifact", 1800.0)
        adb(push_cmd(adb_path, device.serial, art.manifest_path, remote["manifest"]), "pushing the manifest")
        latents_remote = None
        if opts.latents is not None:
            if stream_frames is None:
                raw = write_latents_f32(Path(opts.latents), art.input_shape, Path(tmp) / "latents.f32")
            else:  # a clip of any length: the file's
                raw, stream_frames = write_clip_latents_f32(Path(opts.latents), art.input_shape[1:],
                                                            Path(tmp) / "latents.f32")
            adb(push_cmd(adb_path, device.serial, raw, remote["latents"]), "pushing the latents", 600.0)
            latents_remote = remote["latents"]
            pushed.append(latents_remote)
        adb(chmod_cmd(adb_path, device.serial, *pushed), "making the pushed files readable")

        log.print(f"[dim]installing {apk.name}[/]")
        try:
            adb(install_cmd(adb_path, device.serial, apk), "installing the bench app", 600.0)
        except UserError as e:
            if "INSTALL_FAILED_UPDATE_INCOMPATIBLE" not in str(e):
                raise
            # installed before with another signing key: replace it
            adb(uninstall_cmd(adb_path, device.serial), "uninstalling the old bench app")
            adb(install_cmd(adb_path, device.serial, apk), "installing the bench app", 600.0)

        output = result_name(art.path, art.runtime, int(time.time()))
        remote_result = f"{RESULTS_DIR}/{output}"
        trim = stream_segment_trims(art.manifest, stream_frames) if stream_frames is not None else None
        if stream_frames is None:
            log.print(f"[dim]running {art.runtime}: {opts.warmup} warm-up + {opts.iters} decodes[/]")
        else:
            log.print(f"[dim]running {art.runtime}: streaming a clip of {stream_frames} latent frames "
                      f"(trim {','.join(str(int(t)) for t in trim)})[/]")
        adb(start_cmd(adb_path, device.serial, model=remote["model"], runtime=art.runtime, iters=opts.iters,
                      warmup=opts.warmup, threads=opts.threads, output=output, latents=latents_remote,
                      ep=opts.extra.get("ep"), stream_frames=stream_frames, trim=trim),
            "starting android_bench", 120.0)
        wait_for_result(adb, remote_result, timeout_s)
        doc = fetch_result(adb, remote_result, Path(tmp) / output)
        if stream_frames is not None:
            check_stream_result(doc, stream_frames, f"results from {device.serial}")
        for cmd, what in ((rm_cmd(adb_path, device.serial, remote_result), "removing the device result"),
                          (force_stop_cmd(adb_path, device.serial), "stopping the app")):
            try:
                adb(cmd, what)
            except UserError:
                pass  # clean-up only
    return doc
