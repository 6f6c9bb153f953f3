"""Training data: videos found on disk, decoded once with PyAV, sampled as random clips."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from turbo_vaed.errors import UserError
from turbo_vaed.video_io import read_video

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


def find_videos(paths: Iterable[str | Path]) -> list[Path]:
    """Video files given directly or found recursively in folders, sorted."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTS and q.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"video path not found: {p}")
    if not found:
        raise UserError(f"no videos found in {', '.join(map(str, paths))}: pass files or folders with "
                        f"{'/'.join(sorted(VIDEO_EXTS))} files")
    return found


class ClipSampler:
    """Random clips of ``frames`` frames, cropped (and sometimes downscaled) to ``size`` x ``size``.

    Each video is decoded once (at most ``max_frames`` frames; short side capped at ``max_short``).
    Sampling uses its own RNG, whose state is saved with checkpoints so resumed runs see the same data.
    """

    def __init__(self, videos: list[Path], frames: int, size: int, max_frames: int = 300,
                 max_short: int | None = None, seed: int = 0) -> None:
        self.frames, self.size = frames, size
        self.rng = random.Random(seed)
        cap = max_short or 4 * size
        self.clips: list[torch.Tensor] = []
        self.names: list[str] = []
        for v in videos:
            raw, _ = read_video(v, max_frames=max_frames)
            if raw.shape[0] < frames:
                raise UserError(f"video {v} has {raw.shape[0]} frames, shorter than the clip length {frames}: "
                                f"use --frames {raw.shape[0]} or fewer latent frames, or drop this video")
            x = torch.from_numpy(raw).permute(0, 3, 1, 2)
            short = min(x.shape[-2:])
            if short > cap:
                x = F.interpolate(x.float(), scale_factor=cap / short, mode="area").round().clamp(0, 255).byte()
            if min(x.shape[-2:]) < size:
                raise UserError(f"video {v} is {x.shape[-1]}x{x.shape[-2]}, smaller than the training size "
                                f"{size}: use a smaller --res")
            self.clips.append(x.contiguous())
            self.names.append(str(v))

    def sample(self, batch: int) -> tuple[torch.Tensor, None]:
        """(batch, 3, frames, size, size) in [-1, 1], and no cached latents."""
        out = []
        for _ in range(batch):
            c = self.clips[self.rng.randrange(len(self.clips))]
            f0 = self.rng.randrange(c.shape[0] - self.frames + 1)
            h, w = c.shape[-2:]
            crop = self.size * (2 if self.rng.random() < 0.3 and min(h, w) >= 2 * self.size else 1)
            y, x = self.rng.randrange(h - crop + 1), self.rng.randrange(w - crop + 1)
            v = c[f0 : f0 + self.frames, :, y : y + crop, x : x + crop].float()
            if crop != self.size:
                v = F.interpolate(v, size=(self.size, self.size), mode="area")
            if self.rng.random() < 0.5:
                v = v.flip(-1)
            out.append(v.permute(1, 0, 2, 3) / 127.5 - 1)
        return torch.stack(out), None

    def state(self) -> object:
        return self.rng.getstate()

    def set_state(self, state: object) -> None:
        self.rng.setstate(_as_tuple(state))


def _as_tuple(x):
    return tuple(_as_tuple(i) for i in x) if isinstance(x, list | tuple) else x
