"""Teacher families: latent geometry, frame convention and resolution presets."""

from __future__ import annotations

from dataclasses import dataclass

from turbo_vaed.errors import UserError


@dataclass(frozen=True)
class Family:
    """A teacher VAE family and its latent geometry."""

    name: str
    diffusers_class: str | None  # None: no teacher class in the pinned diffusers
    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    frame_rule: str = "causal"  # causal: 1 + t(T-1); causal-odd: that for odd T, t*T for even T; full: t*T

    def frames_out(self, latent_frames: int) -> int:
        """Output frames the teacher decodes from ``latent_frames`` latent frames (its own rule)."""
        t, n = self.temporal_factor, latent_frames
        if self.frame_rule == "full" or (self.frame_rule == "causal-odd" and n % 2 == 0):
            return t * n
        return 1 + t * (n - 1)

    def trims(self, latent_frames: int) -> bool:
        """True when the decode of ``latent_frames`` drops the first t-1 frames of each temporal upsample."""
        return self.frames_out(latent_frames) != self.temporal_factor * latent_frames

    @property
    def has_teacher(self) -> bool:
        """True when the pinned diffusers has this family's VAE class."""
        return self.diffusers_class is not None

    def latent_frames_for(self, frames: int) -> int:
        """Latent frames the encoder makes from ``frames`` video frames."""
        if self.frame_rule == "full":
            return frames // self.temporal_factor
        return 1 + (frames - 1) // self.temporal_factor

    def valid_frame_count(self, frames: int) -> int:
        """Largest frame count <= ``frames`` that the encoder takes whole (1 + t*k; t*k for ``full``)."""
        return self.frames_out(self.latent_frames_for(frames))


FAMILIES: dict[str, Family] = {
    "hunyuan": Family("hunyuan", "AutoencoderKLHunyuanVideo", 16, 8, 4),
    # diffusers 0.42's CogVideoX decoder keeps every frame for even T (measured: 2 latent frames -> 8 frames)
    "cogvideox": Family("cogvideox", "AutoencoderKLCogVideoX", 16, 8, 4, "causal-odd"),
    "ltx": Family("ltx", "AutoencoderKLLTXVideo", 128, 32, 8),
    "wan": Family("wan", "AutoencoderKLWan", 16, 8, 4),
    # LTX-2: the geometry of LTX-Video with a latent space of its own (TAEHV's taeltx_2 decodes it)
    "ltx2": Family("ltx2", "AutoencoderKLLTX2Video", 128, 32, 8),
    # Video DC-AE (Open-Sora 2.0): no class in diffusers 0.42, so no teacher here; F = 4T, nothing trimmed
    "dcae": Family("dcae", None, 128, 32, 4, "full"),
}


def teacher_families() -> list[str]:
    """Families whose teacher VAE class exists in the pinned diffusers."""
    return [f.name for f in FAMILIES.values() if f.has_teacher]

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


@dataclass(frozen=True)
class Resolution:
    """A resolved ``--res``: pixel size (rounded to the family's factor) and the preset's name (or ``WxH``)."""

    width: int
    height: int
    preset: str

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def resolve_res(res: str | Resolution, family: Family) -> Resolution:
    """``res`` (preset or ``WxH``) as a :class:`Resolution` for ``family`` (a Resolution is checked again)."""
    if isinstance(res, Resolution):
        w, h = resolve_resolution(str(res), family)
        return Resolution(w, h, res.preset)
    w, h = resolve_resolution(res, family)
    return Resolution(w, h, res if res in RESOLUTIONS else f"{w}x{h}")


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
