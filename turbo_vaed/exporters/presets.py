"""Export presets: ``export/<target>.toml`` next to ``models/`` (read with tomllib)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from turbo_vaed.config import MODELS_DIR
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import LoweringOptions

PRESETS_DIR = MODELS_DIR.parent / "export"
PRECISIONS = ("fp16", "fp32")


def check_target(target: str | None) -> str:
    """``target`` if it names an export target (one-line error otherwise)."""
    from turbo_vaed.targets import get_target

    return get_target(target).name


def load_preset(target: str) -> dict:
    """The parsed ``export/<target>.toml``."""
    p = PRESETS_DIR / f"{check_target(target)}.toml"
    if not p.is_file():
        raise UserError(f"export preset not found: {p}; reinstall turbovaed or restore export/{target}.toml")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"export preset {p} is not valid TOML ({e}): fix it") from None


def resolve_delegate(target: str, delegate: str | None, preset: dict) -> str | None:
    """The delegate: ``--delegate``, else the preset's, else the target's default (None if it has none)."""
    from turbo_vaed.targets import get_target, targets

    tgt = get_target(target)
    known = tgt.delegates
    if known == (None,):
        if delegate not in (None, "null", "none"):
            with_delegates = ", ".join(t.name for t in targets() if t.delegates != (None,))
            raise UserError(f"--delegate applies to --target {with_delegates} only, not {target}: drop it")
        return None
    d = delegate or preset.get("delegate", known[0])
    if d not in known:
        raise UserError(f"unknown {tgt.title or target} delegate '{d}': use one of {', '.join(map(str, known))}")
    return d


def resolve_precision(precision: str | None, preset: dict, delegate: str | None) -> str:
    p = precision
    if p is None:
        val = preset.get("precision", "fp32")
        p = val.get(delegate or "", "fp32") if isinstance(val, dict) else val
    if p not in PRECISIONS:
        raise UserError(f"unknown precision '{p}': use fp16 or fp32")
    return p


def resolve_latent_frames(latent_frames: int | None, preset: dict, res: str) -> int:
    if latent_frames is None:
        table = preset.get("latent_frames", {})
        latent_frames = int(table.get(res, table.get("default", 2)))
    if not isinstance(latent_frames, int) or latent_frames < 1 or latent_frames > 64:
        raise UserError(f"--latent-frames must be between 1 and 64, got {latent_frames}")
    return latent_frames


def _auto_flag(low: dict, key: str, auto: bool) -> bool:
    """Pop ``key`` from a preset's [lowering] table: true, false, or "auto" (absent) for ``auto``."""
    value = low.pop(key, "auto")
    if value == "auto":
        return auto
    if not isinstance(value, bool):
        raise UserError(f"export preset [lowering] {key} = {value!r}: use true, false or \"auto\" (fix export/*.toml)")
    return value


def lowering_options(preset: dict, delegate: str | None, precision: str) -> LoweringOptions:
    """The preset's :class:`LoweringOptions` (``fp16_safe = "auto"``: on for fp16; ``stream_partial_sums = "auto"``:
    on for fp32)."""
    low = dict(preset.get("lowering", {}))
    if delegate is not None and isinstance(low.get(delegate), dict):
        low = dict(low[delegate])
    low = {k: v for k, v in low.items() if not isinstance(v, dict)}
    fp16_safe = _auto_flag(low, "fp16_safe", precision == "fp16")
    # partial-sum states only in fp32: in fp16 each tap's contribution and the carried sum round on their own
    # (the test student's fp16 stream fell from >= 45 to 40 dB against the fp32 full decode)
    partial = _auto_flag(low, "stream_partial_sums", precision != "fp16")
    try:
        return LoweringOptions(fp16_safe=fp16_safe, stream_partial_sums=partial, **low)
    except (TypeError, ValueError) as e:
        raise UserError(f"export preset [lowering] is invalid ({e}): fix export/*.toml") from None


def preset_path(target: str) -> Path:
    return PRESETS_DIR / f"{target}.toml"
