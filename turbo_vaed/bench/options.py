"""Options shared by every bench driver (host, mac, iphone16pro, android)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from turbo_vaed.targets import targets
from turbo_vaed.targets.coreml import COMPUTE_UNITS as _COREML_UNITS

DEVICES = ("host", "mac", "iphone16pro", "android")
# runtime -> (export target, default delegate, artifact suffix) of the artifact it runs (from turbo_vaed.targets)
# (listed onnx, executorch, coreml: host-runnable runtimes first, Core ML predicts on macOS only)
EXPORT_TARGET = {t.runtime: (t.name, t.delegates[0], t.suffix) for t in reversed(targets())}
RUNTIMES = ("torch", "torch-lowered", *EXPORT_TARGET)
COMPUTE_UNITS = tuple(_COREML_UNITS)  # results-schema names of Core ML's compute units


@dataclass
class BenchOptions:
    """What ``turbovaed bench`` was asked to do; each driver reads the fields it needs."""

    device: str = "host"
    artifact: Path | None = None
    runtimes: tuple[str, ...] = ()  # empty: the driver's default set
    family: str | None = None
    res: str = "256p"
    latent_frames: int = 3
    warmup: int = 1
    iters: int = 5
    vs_teacher: bool = False
    threads: int | None = None
    checkpoint: Path | None = None
    teacher: str = "reference"
    json_path: Path | None = None
    out_dir: Path = Path("out/bench")
    # device-specific
    simulator: bool = False
    compute_units: tuple[str, ...] = ("all",)
    serial: str | None = None
    latents: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def isolate(self) -> bool:
        """Measure each job in a fresh process (``extra["isolate"]``, default on)."""
        return bool(self.extra.get("isolate", True))


DEFAULT_CLIP_LATENT_FRAMES = 21  # latent frames of a streamed clip: a 5-second Wan clip, 81 frames


def stream_clip_frames(opts: BenchOptions, manifest: dict, artifact_name: str) -> int | None:
    """Latent frames of the clip to stream through a streaming artifact, or None for a whole-chunk run
    (``--stream`` on a whole-chunk artifact is a one-line error). Every device driver asks here."""
    from turbo_vaed.errors import UserError

    if manifest.get("stream"):
        frames = int(opts.extra.get("stream_frames") or DEFAULT_CLIP_LATENT_FRAMES)
        if frames < 1:
            raise UserError(f"--stream-frames must be >= 1, got {frames}")
        return frames
    if opts.extra.get("stream"):
        raise UserError(f"{artifact_name} is a whole-chunk artifact: export it with `turbovaed export --target "
                        f"{manifest.get('target', '?')} --stream` to benchmark streaming")
    return None


def stream_trims(manifest: dict, clip_latent_frames: int) -> bool:
    """The ``trim`` flag of a streamed clip: its family's full decode drops the first frames (wan/hunyuan/ltx
    always, cogvideox for an odd number of latent frames)."""
    from turbo_vaed.families import get_family

    return get_family(manifest["family"]).trims(clip_latent_frames)


def stream_segment_trims(manifest: dict, clip_latent_frames: int) -> tuple[bool, ...]:
    """The ``trim`` flag of each segment a streamed clip is decoded as: the clip cut at the manifest's
    ``stream.restart_at`` (:func:`turbo_vaed.streaming.segments`; no restart: one segment, the whole clip), each
    segment a video of its own, so the family's rule at that segment's length. The apps take one flag per segment
    (ios_bench ``-trim YES,NO``, android_bench ``--es trim 1,0``) and check the count against their own cut."""
    from turbo_vaed.streaming import segments

    cuts = segments(clip_latent_frames, (manifest.get("stream") or {}).get("restart_at"))
    return tuple(stream_trims(manifest, b - a) for a, b in cuts)


def trim_flags(trim: bool | Sequence[bool] | None) -> tuple[bool, ...] | None:
    """A driver's ``trim`` argument as the apps' per-segment flags: a bool is one flag for every segment."""
    if trim is None:
        return None
    flags = (bool(trim),) if isinstance(trim, bool) else tuple(bool(t) for t in trim)
    if not flags:
        from turbo_vaed.errors import UserError

        raise UserError("trim needs one flag, or one per segment of the streamed clip")
    return flags
