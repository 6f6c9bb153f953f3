"""Teacher families: latent geometry, frame convention and resolution presets."""

from __future__ import annotations

from dataclasses import dataclass

from turbo_vaed.errors import UserError


@dataclass(frozen=True)
class Family:
    """A teacher VAE family and its latent geometry."""

    name: str
    diffusers_class: str
    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def frames_out(self, latent_frames: int) -> int:
        """Output frames for ``latent_frames`` latent frames (causal: 1 + t(T-1))."""
        return 1 + self.temporal_factor * (latent_frames - 1)

    def latent_frames_for(self, frames: int) -> int:
        """Latent frames the encoder makes from ``frames`` video frames."""
        return 1 + (frames - 1) // self.temporal_factor

    def valid_frame_count(self, frames: int) -> int:
        """Largest frame count <= ``frames`` of the form 1 + t*k."""
        return self.frames_out(self.latent_frames_for(frames))


FAMILIES: dict[str, Family] = {
    "hunyuan": Family("hunyuan", "AutoencoderKLHunyuanVideo", 16, 8, 4),
    "cogvideox": Family("cogvideox", "AutoencoderKLCogVideoX", 16, 8, 4),
    "ltx": Family("ltx", "AutoencoderKLLTXVideo", 128, 32, 8),
    "wan": Family("wan", "AutoencoderKLWan", 16, 8, 4),
}

# Named resolution presets, (width, height) before rounding to the family's spatial factor.
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "256p": (256, 256),
    "480p": (848, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}


def get_family(name: str) -> Family:
    """Look up a family by name, or raise a one-line :class:`UserError`."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(
            f"unknown family '{name}': choose one of {', '.join(FAMILIES)}"
        ) from None


def resolve_resolution(res: str, family: Family) -> tuple[int, int]:
    """Pixel (width, height) of a preset or ``WxH`` string, checked against the family factor.

    Presets are rounded down to the family's spatial factor (720p is 1280x704 for LTX);
    an explicit ``WxH`` must already be divisible by it.
    """
    f = family.spatial_factor
    if res in RESOLUTIONS:
        w, h = RESOLUTIONS[res]
        return (w // f) * f, (h // f) * f
    try:
        w, h = (int(v) for v in res.lower().split("x"))
    except ValueError:
        raise UserError(
            f"unsupported resolution '{res}': use one of {', '.join(RESOLUTIONS)} or WxH"
        ) from None
    if w <= 0 or h <= 0 or w % f or h % f:
        raise UserError(
            f"resolution {w}x{h} is not divisible by the {family.name} spatial factor {f}: "
            f"use a multiple of {f}, e.g. {max(f, w // f * f)}x{max(f, h // f * f)}"
        )
    return w, h
