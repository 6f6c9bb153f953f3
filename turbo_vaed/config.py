"""Student configurations: the JSON files in ``models/`` and their typed form."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from turbo_vaed.errors import UserError
from turbo_vaed.families import Family, get_family

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class StageConfig:
    """One decoder stage: residual blocks, then an optional decoupled 3D pixel-shuffle upsample."""

    channels: int
    blocks: int
    conv: str = "dsc"  # "full" (dense 3x3x3) or "dsc" (depthwise 3x3x3 + pointwise 1x1x1)
    up_t: int = 1
    up_s: int = 1
    up_conv: str = "dsc"


@dataclass(frozen=True)
class StudentConfig:
    """A Turbo-VAED student decoder for one teacher family."""

    family: str
    stages: tuple[StageConfig, ...]
    patch_size: int = 1
    teacher_widths: tuple[int, ...] = ()
    eps: float = 1e-6
    name: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def fam(self) -> Family:
        return get_family(self.family)

    def validate(self) -> StudentConfig:
        """Check that the stages reproduce the family's spatial and temporal factors."""
        fam = self.fam
        if not self.stages:
            raise UserError(f"student config '{self.name}' has no stages: add at least one")
        s = self.patch_size
        t = 1
        for st in self.stages:
            if st.conv not in ("full", "dsc") or st.up_conv not in ("full", "dsc"):
                raise UserError(f"student config '{self.name}': conv must be 'full' or 'dsc'")
            s *= st.up_s
            t *= st.up_t
        if s != fam.spatial_factor or t != fam.temporal_factor:
            raise UserError(
                f"student config '{self.name}' upsamples x{s} spatially and x{t} temporally, "
                f"but family {fam.name} needs x{fam.spatial_factor} and x{fam.temporal_factor}"
            )
        if self.stages[-1].up_s != 1 or self.stages[-1].up_t != 1:
            raise UserError(f"student config '{self.name}': the last stage must not upsample")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        d["teacher_widths"] = list(self.teacher_widths)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        try:
            stages = tuple(StageConfig(**s) for s in d["stages"])
            return cls(
                family=d["family"],
                stages=stages,
                patch_size=int(d.get("patch_size", 1)),
                teacher_widths=tuple(d.get("teacher_widths", ())),
                eps=float(d.get("eps", 1e-6)),
                name=d.get("name", ""),
                notes=d.get("notes", ""),
                extra=dict(d.get("extra", {})),
            ).validate()
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"invalid student config: {e!r}; see models/*.json for the format") from None

    def scaled(self, width: float = 1.0, blocks: int | None = None) -> StudentConfig:
        """A narrower/shallower copy (for tests and tiny runs)."""
        stages = tuple(
            replace(s, channels=max(8, int(s.channels * width) // 8 * 8),
                    blocks=s.blocks if blocks is None else min(s.blocks, blocks))
            for s in self.stages
        )
        return replace(self, stages=stages, name=f"{self.name}-x{width:g}")


def student_families() -> list[str]:
    """Families that have a project student config (``models/<family>.json``)."""
    from turbo_vaed.families import FAMILIES

    return [f for f in FAMILIES if (MODELS_DIR / f"{f}.json").is_file()]


def load_student_config(name_or_path: str | Path) -> StudentConfig:
    """Load ``models/<name>.json`` or a JSON file path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = MODELS_DIR / f"{name_or_path}.json"
    if not p.is_file():
        known = ", ".join(sorted(q.stem for q in MODELS_DIR.glob("*.json")))
        raise UserError(f"student config not found: {p}; use one of: {known}, or a path to a JSON file")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"student config {p} is not valid JSON ({e}): fix or regenerate it") from None
    d.setdefault("name", p.stem)
    return StudentConfig.from_dict(d)
