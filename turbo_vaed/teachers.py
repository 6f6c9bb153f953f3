"""Teacher adapters: diffusers video VAEs, their latent normalisation, and feature taps."""

from __future__ import annotations

import json
import warnings
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn

from turbo_vaed.config import MODELS_DIR
from turbo_vaed.errors import UserError
from turbo_vaed.families import FAMILIES, Family, get_family

REFERENCE_DIR = MODELS_DIR / "reference"

# Reduced-width configs of each teacher class, for fast tests.
SMALL_CONFIGS: dict[str, dict] = {
    "hunyuan": dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8),
    "cogvideox": dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8),
    "ltx": dict(
        block_out_channels=(16, 16, 32, 32),
        decoder_block_out_channels=(16, 16, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
    ),
    "wan": dict(base_dim=8, num_res_blocks=1),
}


class RandomTeacherWarning(UserWarning):
    """A teacher was built with random weights (fine for tests, meaningless for quality)."""


def teacher_class(family: Family):
    import diffusers

    if family.diffusers_class is None:
        raise UserError(f"family {family.name} has no teacher VAE class in diffusers {diffusers.__version__} "
                        "(Video DC-AE is not in it): this step needs a teacher; use a family that has one")
    return getattr(diffusers, family.diffusers_class)


def reference_family() -> str:
    """Family of the built-in reference teacher in ``models/reference``."""
    path = REFERENCE_DIR / "config.json"
    if not path.is_file():
        raise UserError(f"the built-in reference teacher is missing ({path}): reinstall turbovaed, or "
                        "recreate it with scripts/train_reference_teacher.py")
    return family_of_class(json.loads(path.read_text())["_class_name"])


def family_of_class(class_name: str) -> str:
    for f in FAMILIES.values():
        if f.diffusers_class is not None and f.diffusers_class == class_name:
            return f.name
    raise UserError(f"teacher class {class_name} is not a supported family ({', '.join(FAMILIES)})")


def family_of(vae: nn.Module) -> Family:
    """The :class:`Family` of a diffusers VAE instance."""
    return get_family(family_of_class(type(vae).__name__))


def load_teacher(family: str | None = None, path: str | Path | None = "reference", small: bool = False) -> nn.Module:
    """Build a teacher VAE.

    ``path="reference"`` loads the built-in reference weights (``models/reference``); a directory
    loads ``from_pretrained(dir)``; ``None`` builds the class's default (or ``small``) config with
    random weights and warns.
    """
    if path == "reference":
        path = REFERENCE_DIR
        fam_name = reference_family()
        if family is not None and family != fam_name:
            raise UserError(
                f"the built-in reference teacher is family '{fam_name}', not '{family}': "
                f"pass --teacher PATH to a local {family} VAE directory"
            )
        family = fam_name
    if path is not None:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise UserError(f"teacher directory not found or has no config.json: {p}; pass a diffusers VAE folder")
        from turbo_vaed.guards import read_json

        cfg = read_json(p / "config.json", "teacher config", fix="pass a diffusers VAE folder")
        fam = get_family(family_of_class(str(cfg.get("_class_name", ""))))
        if family is not None and family != fam.name:
            raise UserError(f"teacher at {p} is family '{fam.name}', not '{family}': fix --family")
        cls = teacher_class(fam)
        try:
            vae = cls.from_pretrained(str(p), torch_dtype=torch.float32)
        except Exception as e:  # corrupt weights, wrong shapes
            raise UserError(f"cannot load teacher weights from {p}: {type(e).__name__}: {e}") from None
        return vae.eval().requires_grad_(False)
    if family is None:
        raise UserError("no teacher given: pass --family with a teacher path, or use the reference teacher")
    fam = get_family(family)
    warnings.warn(
        f"{fam.name} teacher built from its default config with RANDOM weights "
        "(pass a local weights directory for real use)", RandomTeacherWarning, stacklevel=2,
    )
    cls = teacher_class(fam)
    kwargs = SMALL_CONFIGS[fam.name] if small else {}
    return cls(**kwargs).eval().requires_grad_(False)


def teacher_decoder_modules(vae: nn.Module) -> list[nn.Module]:
    """The modules a decode runs (decoder + post-quant conv), for parameter counts."""
    mods = [vae.decoder]
    pq = getattr(vae, "post_quant_conv", None)
    if pq is not None:
        mods.append(pq)
    return mods


def teacher_decoder_parameters(vae: nn.Module) -> int:
    return sum(p.numel() for m in teacher_decoder_modules(vae) for p in m.parameters())


def _norm_stats(vae: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean, std, scaling_factor) such that z_normalised = (z - mean) * sf / std."""
    cfg = vae.config
    c = cfg.get("latent_channels", cfg.get("z_dim", 16))
    mean = torch.zeros(c)
    std = torch.ones(c)
    buffers = dict(vae.named_buffers())
    if "latents_mean" in buffers:  # LTX registers them as buffers
        mean, std = buffers["latents_mean"].float().flatten(), buffers["latents_std"].float().flatten()
    elif cfg.get("latents_mean") is not None:
        mean = torch.tensor(cfg["latents_mean"], dtype=torch.float32)
        std = torch.tensor(cfg["latents_std"], dtype=torch.float32)
    sf = float(cfg.get("scaling_factor", 1.0) or 1.0)
    return mean, std, sf


def normalize_latents(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    mean, std, sf = _norm_stats(vae)
    shape = (1, -1, 1, 1, 1)
    return (z - mean.view(shape).to(z)) * sf / std.view(shape).to(z)


def denormalize_latents(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    mean, std, sf = _norm_stats(vae)
    shape = (1, -1, 1, 1, 1)
    return z * std.view(shape).to(z) / sf + mean.view(shape).to(z)


@torch.no_grad()
def teacher_encode(vae: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """Video (B, 3, F, H, W) in [-1, 1] -> normalised latents (posterior mode)."""
    dist = vae.encode(video).latent_dist
    return normalize_latents(vae, dist.mode())


def teacher_decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> video in [-1, 1] (teacher's own decode path)."""
    out = vae.decode(denormalize_latents(vae, z)).sample
    return out.clamp(-1.0, 1.0)


def tap_modules(vae: nn.Module) -> list[nn.Module]:
    """Stage boundaries to tap: the decoder's mid block, then each up block."""
    dec = vae.decoder
    return [dec.mid_block, *dec.up_blocks]


class FeatureTaps(AbstractContextManager):
    """Forward hooks on stock diffusers modules that record their outputs.

    Teachers that decode in temporal chunks (Wan, CogVideoX) fire a hook once per chunk; the
    chunks are concatenated on the time axis. ``features()`` returns one tensor per tap.
    """

    def __init__(self, vae: nn.Module, modules: list[nn.Module] | None = None) -> None:
        self.modules = modules if modules is not None else tap_modules(vae)
        self._chunks: list[list[torch.Tensor]] = [[] for _ in self.modules]
        self._handles: list = []

    def _hook(self, idx: int):
        def fn(_mod, _inp, out):
            if isinstance(out, tuple):
                out = out[0]
            self._chunks[idx].append(out)
        return fn

    def __enter__(self) -> FeatureTaps:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def clear(self) -> None:
        self._chunks = [[] for _ in self.modules]

    def features(self) -> list[torch.Tensor]:
        return [torch.cat(c, dim=2) if len(c) > 1 else c[0] for c in self._chunks if c]
