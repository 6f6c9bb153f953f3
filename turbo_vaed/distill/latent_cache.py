"""Latent cache: clips sampled once and encoded once by the teacher, reused by every epoch."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch

from turbo_vaed.errors import UserError

SHARD = "shard_{:04d}.safetensors"


def build_cache(sampler, teacher, family: str, out_dir: Path, clips: int, shard_size: int = 64,
                progress=None) -> Path:
    """Sample ``clips`` clips with ``sampler``, encode them, write shards + index.json atomically."""
    from safetensors.torch import save_file

    from turbo_vaed.teachers import teacher_encode

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=False)
    n_shards = 0
    done = 0
    while done < clips:
        n = min(shard_size, clips - done)
        xs, zs = [], []
        for _ in range(n):
            x, _ = sampler.sample(1)
            with torch.no_grad():
                zs.append(teacher_encode(teacher, x))
            xs.append(((x + 1) * 127.5).round().clamp(0, 255).byte())
            done += 1
            if progress:
                progress(done)
        save_file({"clips": torch.cat(xs), "latents": torch.cat(zs).float()}, str(tmp / SHARD.format(n_shards)))
        n_shards += 1
    (tmp / "index.json").write_text(json.dumps({"format": "turbovaed.latent_cache/1", "family": family,
                                                "clips": clips, "shards": n_shards}))
    if out_dir.exists():
        raise UserError(f"{out_dir} already exists: remove it or choose another -o")
    tmp.rename(out_dir)
    return out_dir


class CachedClips:
    """Samples (video, latents) pairs from a latent cache; same interface as ClipSampler."""

    def __init__(self, cache_dir: Path, family: str, seed: int = 0) -> None:
        from safetensors.torch import load_file

        idx_path = Path(cache_dir) / "index.json"
        if not idx_path.is_file():
            raise UserError(f"no latent cache at {cache_dir}: build it with `turbovaed cache-latents`")
        idx = json.loads(idx_path.read_text())
        if idx.get("family") != family:
            raise UserError(f"latent cache {cache_dir} is for {idx.get('family')}, not {family}: rebuild it")
        shards = [load_file(str(Path(cache_dir) / SHARD.format(i))) for i in range(idx["shards"])]
        self.clips = torch.cat([s["clips"] for s in shards])
        self.latents = torch.cat([s["latents"] for s in shards])
        self.rng = random.Random(seed)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self.rng.randrange(len(self.clips)) for _ in range(batch)]
        return self.clips[ids].float() / 127.5 - 1, self.latents[ids]

    def state(self) -> object:
        return self.rng.getstate()

    def set_state(self, state: object) -> None:
        from turbo_vaed.data import _as_tuple

        self.rng.setstate(_as_tuple(state))
