"""Distillation run settings (saved as ``run_dir/distill.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
MAX_FEATURE_STAGE = 63


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

    def validate(self) -> DistillConfig:
        """One-line :class:`~turbo_vaed.errors.UserError` for any setting out of range (before any work)."""
        from turbo_vaed.errors import UserError
        from turbo_vaed.guards import check_choice, check_number

        n = check_number
        for opt, v in (("--steps", self.steps), ("--batch", self.batch), ("--accum", self.accum),
                       ("--save-every", self.save_every), ("--log-every", self.log_every),
                       ("--latent-frames", self.latent_frames), ("--threads", self.threads),
                       ("--stop-at", self.stop_at), ("max_frames", self.max_frames)):
            n(v, opt, lo=1, integer=True)
        n(self.res, "--crop", lo=8, hi=4096, integer=True)
        n(self.warmup, "warmup", lo=0, integer=True)
        n(self.adv_start, "--adv-start", lo=0, integer=True)
        n(self.lr, "--lr", lo=0, lo_open=True, hi=10)
        n(self.disc_lr, "disc_lr", lo=0, lo_open=True, hi=10)
        n(self.weight_decay, "weight_decay", lo=0)
        n(self.ema, "--ema", lo=0, hi=0.999999)
        for opt, v in (("--w-pixel", self.w_pixel), ("--w-output", self.w_output), ("--w-feature", self.w_feature),
                       ("--w-lpips", self.w_lpips), ("--w-adv", self.w_adv)):
            n(v, opt, lo=0, hi=1e6)
        if self.w_pixel + self.w_output + self.w_feature + self.w_lpips + self.w_adv <= 0:
            raise UserError("every loss weight is 0: nothing would be trained; set --w-pixel or --w-output > 0")
        check_choice(self.mixed_precision, "--mixed-precision", MIXED_PRECISION)
        bad = [s for s in self.feature_stages if not isinstance(s, int) or not 0 <= s <= MAX_FEATURE_STAGE]
        if bad:
            raise UserError(f"--feature-stages: stage {bad[0]} is not a stage index (0, 1, 2, ...)")
        if len(set(self.feature_stages)) != len(self.feature_stages):
            raise UserError(f"--feature-stages lists a stage twice: {','.join(map(str, self.feature_stages))}")
        if self.stop_at is not None and self.stop_at > self.steps:
            raise UserError(f"--stop-at {self.stop_at} is past --steps {self.steps}: stop earlier or train longer")
        if not self.videos and not self.latent_cache:
            raise UserError("no training data: pass --videos PATH (files or folders) or --latent-cache DIR")
        return self
