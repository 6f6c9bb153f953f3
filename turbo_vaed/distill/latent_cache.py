"""Latent cache: clips sampled once and encoded once by the teacher, reused by every epoch.

A cache folder holds ``shard_NNNN.safetensors`` files (``clips`` uint8 N x 3 x F x S x S, ``latents`` float
N x C x T x h x w) and ``index.json``. It is built in a hidden temp folder next to the destination and renamed
into place when complete, so an interrupted build leaves nothing; reading checks the index and every shard
(present, the shapes the index promises, finite latents) and is one :class:`UserError` line on any problem.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from turbo_vaed.errors import UserError

SHARD = "shard_{:04d}.safetensors"
FORMAT = "turbovaed.latent_cache/1"
MAX_SHARDS = 100_000
FIX = "rebuild it with `turbovaed cache-latents`"


def build_cache(sampler, teacher, family: str, out_dir: Path, clips: int, shard_size: int = 64,
                progress=None) -> Path:
    """Sample ``clips`` clips with ``sampler``, encode them, write shards + index.json atomically."""
    from safetensors.torch import save_file

    from turbo_vaed.fileio import atomic_path
    from turbo_vaed.guards import check_finite, dumps_json
    from turbo_vaed.teachers import teacher_encode

    if clips < 1:
        raise UserError(f"--clips must be >= 1, got {clips}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir} already exists: remove it or choose another -o")
    n_shards = 0
    done = 0
    with atomic_path(out_dir) as tmp:  # removed on any failure or Ctrl-C
        tmp.mkdir()
        while done < clips:
            n = min(shard_size, clips - done)
            xs, zs = [], []
            for _ in range(n):
                x, _ = sampler.sample(1)
                with torch.no_grad():
                    z = teacher_encode(teacher, x)
                check_finite(z, "the teacher's latents", "the teacher VAE is broken: check --teacher")
                zs.append(z)
                xs.append(((x + 1) * 127.5).round().clamp(0, 255).byte())
                done += 1
                if progress:
                    progress(done)
            save_file({"clips": torch.cat(xs), "latents": torch.cat(zs).float()}, str(tmp / SHARD.format(n_shards)))
            n_shards += 1
        x0, z0 = xs[0], zs[0]
        (tmp / "index.json").write_text(dumps_json({
            "format": FORMAT, "family": family, "clips": clips, "shards": n_shards,
            "clip_shape": list(x0.shape[1:]), "latent_shape": list(z0.shape[1:])}))
        if out_dir.exists():
            raise UserError(f"{out_dir} already exists: remove it or choose another -o")
    return out_dir


def read_index(cache_dir: Path, family: str) -> dict:
    """The checked ``index.json`` of a cache folder."""
    from turbo_vaed.guards import read_json

    cache_dir = Path(cache_dir)
    idx_path = cache_dir / "index.json"
    if not cache_dir.is_dir() or not idx_path.is_file():
        raise UserError(f"no latent cache at {cache_dir}: build it with `turbovaed cache-latents`")
    idx = read_json(idx_path, "latent cache index", max_bytes=2**20, fix=FIX)
    if idx.get("format", FORMAT) != FORMAT:
        raise UserError(f"{idx_path} is not a {FORMAT} index: {FIX}")
    if idx.get("family") != family:
        raise UserError(f"latent cache {cache_dir} is for {idx.get('family')}, not {family}: rebuild it")
    for k, hi in (("clips", 10**9), ("shards", MAX_SHARDS)):
        v = idx.get(k)
        if type(v) is not int or not 1 <= v <= hi:
            raise UserError(f"{idx_path}: '{k}' is {v!r}, not a count >= 1: {FIX}")
    if idx["shards"] > idx["clips"]:
        raise UserError(f"{idx_path}: {idx['shards']} shards for {idx['clips']} clips: {FIX}")
    for k in ("clip_shape", "latent_shape"):
        v = idx.get(k)
        if v is not None and not (isinstance(v, list) and len(v) == 4 and all(type(d) is int and d > 0 for d in v)):
            raise UserError(f"{idx_path}: '{k}' is not four positive integers: {FIX}")
    return idx


class CachedClips:
    """Samples (video, latents) pairs from a latent cache; same interface as ClipSampler."""

    def __init__(self, cache_dir: Path, family: str, seed: int = 0, clip_shape: tuple[int, ...] | None = None
                 ) -> None:
        from safetensors import safe_open

        from turbo_vaed.guards import available_bytes, check_finite, reading, safetensors_header

        cache_dir = Path(cache_dir)
        idx = read_index(cache_dir, family)
        paths = [cache_dir / SHARD.format(i) for i in range(idx["shards"])]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"latent cache {cache_dir} lacks {missing[0]}"
                            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: {FIX}")
        total, shapes = 0, None
        for p in paths:  # headers first: shapes and sizes before any tensor is read
            head = safetensors_header(p, "latent cache shard", FIX)
            if "clips" not in head or "latents" not in head:
                raise UserError(f"latent cache shard {p} lacks 'clips' or 'latents': {FIX}")
            if head["clips"].get("dtype") != "U8" or head["latents"].get("dtype") not in ("F32", "F16", "BF16"):
                raise UserError(f"latent cache shard {p} has unexpected dtypes: {FIX}")
            cs, ls = head["clips"]["shape"], head["latents"]["shape"]
            if len(cs) != 5 or len(ls) != 5 or cs[0] != ls[0] or cs[0] < 1 or cs[1] != 3:
                raise UserError(f"latent cache shard {p} holds clips {cs} and latents {ls}, which do not pair: {FIX}")
            if shapes is not None and (tuple(cs[1:]), tuple(ls[1:])) != shapes:
                raise UserError(f"latent cache shard {p} holds clips of another shape than the first shard: {FIX}")
            shapes = (tuple(cs[1:]), tuple(ls[1:]))
            total += cs[0]
        if total != idx["clips"]:
            raise UserError(f"latent cache {cache_dir} holds {total} clips, its index says {idx['clips']}: {FIX}")
        if idx.get("clip_shape") and tuple(idx["clip_shape"]) != shapes[0]:
            raise UserError(f"latent cache {cache_dir}: shards hold clips {list(shapes[0])}, the index says "
                            f"{idx['clip_shape']}: {FIX}")
        if clip_shape is not None and tuple(clip_shape) != shapes[0]:
            c, f, h, w = shapes[0]
            raise UserError(f"latent cache {cache_dir} holds {f}-frame {w}x{h} clips, this run trains on "
                            f"{clip_shape[1]}-frame {clip_shape[3]}x{clip_shape[2]}: pass the --crop and "
                            "--latent-frames it was built with, or rebuild it")
        need = sum(p.stat().st_size for p in paths) * 2
        if need > available_bytes():
            raise UserError(f"latent cache {cache_dir} needs about {need / 2**30:.1f} GiB of memory, more than is "
                            "available: build a smaller cache (--clips)")
        clips, latents = [], []
        for p in paths:
            with reading(p, "latent cache shard", FIX), safe_open(str(p), framework="pt") as f:
                clips.append(f.get_tensor("clips"))
                latents.append(f.get_tensor("latents").float())
            check_finite(latents[-1], f"latent cache shard {p}", FIX)
        self.clips = torch.cat(clips)
        self.latents = torch.cat(latents)
        self.rng = random.Random(seed)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self.rng.randrange(len(self.clips)) for _ in range(batch)]
        return self.clips[ids].float() / 127.5 - 1, self.latents[ids]

    def state(self) -> object:
        return self.rng.getstate()

    def set_state(self, state: object) -> None:
        from turbo_vaed.data import _as_tuple

        try:
            self.rng.setstate(_as_tuple(state))
        except (TypeError, ValueError):
            raise UserError("the saved data-sampler state is corrupt: start a new run without --resume") from None
