"""Distillation run settings (saved as ``run_dir/distill.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class DistillConfig:
    """Everything a distillation run needs; CLI flags map 1:1 onto these fields."""

    family: str | None = None
    teacher: str = "reference"
    videos: list[str] = field(default_factory=list)
    latent_cache: str | None = None
    student_config: str | None = None  # models/<name>.json; default: family (wan-reference for the reference)
    init_checkpoint: str | None = None
    res: int = 128
    latent_frames: int = 3
    steps: int = 1000
    stop_at: int | None = None  # stop (and save) at this step; resume later with the same --steps
    batch: int = 2
    accum: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 50
    ema: float = 0.995
    w_pixel: float = 1.0
    w_output: float = 1.0
    w_feature: float = 0.5
    feature_stages: tuple[int, ...] = (0, 1, 2, 3)
    w_lpips: float = 0.0
    lpips: str | None = None
    w_adv: float = 0.0
    adv_start: int = 0
    disc_lr: float = 2e-4
    grad_checkpointing: bool = False
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    save_every: int = 200
    log_every: int = 10
    max_frames: int = 300
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["feature_stages"] = list(self.feature_stages)
        return d
