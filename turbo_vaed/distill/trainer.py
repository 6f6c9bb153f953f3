"""The distillation loop (accelerate: single-process CPU and multi-GPU share this code path)."""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from pathlib import Path

import torch
from torch import nn

from turbo_vaed.checkpoint import save_student
from turbo_vaed.config import load_student_config
from turbo_vaed.data import ClipSampler, find_videos
from turbo_vaed.distill.config import DistillConfig
from turbo_vaed.distill.latent_cache import CachedClips
from turbo_vaed.distill.losses import (
    PatchDiscriminator3D,
    Perceptual,
    feature_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family
from turbo_vaed.resolve import REFERENCE_STUDENT_CONFIG, resolve_family, resolve_teacher, uses_reference
from turbo_vaed.student import AlignmentHeads, TurboVAEDDecoder
from turbo_vaed.teachers import FeatureTaps, teacher_decode, teacher_encode

CHECKPOINT_DIR = "checkpoint"


class _Stateful:
    """Small objects registered with accelerate so checkpoints hold them (EMA, data RNG, step)."""

    def __init__(self, get, set_) -> None:
        self._get, self._set = get, set_

    def state_dict(self) -> dict:
        return self._get()

    def load_state_dict(self, state: dict) -> None:
        self._set(state)


class StudentWithHeads(nn.Module):
    """The trainable pair: one forward so DDP (accelerate) sees every parameter it syncs."""

    def __init__(self, student: TurboVAEDDecoder, heads: AlignmentHeads, stages: list[int],
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.student, self.heads, self.stages = student, heads, list(stages)
        self.grad_checkpointing = grad_checkpointing

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.grad_checkpointing and self.training:
            from torch.utils.checkpoint import checkpoint

            out, feats = checkpoint(self.student, z, True, use_reentrant=False)
        else:
            out, feats = self.student(z, return_features=True)
        return out, self.heads([feats[s] for s in self.stages]) if self.stages else []


def teacher_feature_widths(teacher: nn.Module, z: torch.Tensor) -> list[int]:
    """Channel width of each teacher tap, from one decode of ``z``."""
    with torch.no_grad(), FeatureTaps(teacher) as taps:
        teacher_decode(teacher, z)
    return [f.shape[1] for f in taps.features()]


class Distiller:
    """Frozen teacher, trainable student + alignment heads (+ optional discriminator)."""

    def __init__(self, cfg: DistillConfig, run_dir: Path, resume: bool = False, console=None) -> None:
        from accelerate import Accelerator

        self.cfg, self.run_dir, self.console = cfg, Path(run_dir), console
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cuda = torch.cuda.is_available()
        mp = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if cuda else "no")
        self.acc = Accelerator(cpu=not cuda, mixed_precision=mp, gradient_accumulation_steps=cfg.accum)
        family = resolve_family(cfg.family, cfg.teacher)
        self.family = get_family(family)
        cfg.family = family
        self.frames = self.family.frames_out(cfg.latent_frames)
        if cfg.res % self.family.spatial_factor:
            raise UserError(f"--res {cfg.res} is not divisible by the {family} spatial factor "
                            f"{self.family.spatial_factor}: use a multiple of it")
        # data
        if cfg.latent_cache:
            self.data = CachedClips(Path(cfg.latent_cache), family, seed=cfg.seed)
        else:
            self.data = ClipSampler(find_videos(cfg.videos), self.frames, cfg.res, cfg.max_frames, seed=cfg.seed)
        # models
        self.teacher = resolve_teacher(cfg.teacher, family).to(self.acc.device)
        torch.manual_seed(cfg.seed)
        if cfg.init_checkpoint:
            from turbo_vaed.checkpoint import load_student

            student = load_student(cfg.init_checkpoint, family).train()
        else:
            name = cfg.student_config or (REFERENCE_STUDENT_CONFIG if uses_reference(family, cfg.teacher) else family)
            scfg = load_student_config(name)
            if scfg.family != family:
                raise UserError(f"student config {name} is for {scfg.family}, not {family}: pass --student-config")
            student = TurboVAEDDecoder(scfg)
        z0 = torch.zeros(1, self.family.latent_channels, cfg.latent_frames,
                         cfg.res // self.family.spatial_factor, cfg.res // self.family.spatial_factor,
                         device=self.acc.device)
        t_widths = teacher_feature_widths(self.teacher, z0)
        n_taps = min(len(t_widths), len(student.stages))
        stages = [s for s in cfg.feature_stages if s < n_taps] if cfg.w_feature > 0 else []
        self.stages = stages
        heads = AlignmentHeads([student.stage_channels()[s] for s in stages], [t_widths[s] for s in stages])
        self.model = StudentWithHeads(student, heads, stages, cfg.grad_checkpointing).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.99))
        self.perceptual = Perceptual(cfg.lpips).to(self.acc.device) if (cfg.lpips and cfg.w_lpips > 0) else None
        self.disc = self.opt_d = None
        if cfg.w_adv > 0:
            self.disc = PatchDiscriminator3D()
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        prepared = self.acc.prepare(self.model, self.opt, *( [self.disc, self.opt_d] if self.disc else []))
        self.model, self.opt = prepared[0], prepared[1]
        if self.disc:
            self.disc, self.opt_d = prepared[2], prepared[3]
        self.ema = copy.deepcopy(self._student()).eval().requires_grad_(False)
        self.step = 0
        self.acc.register_for_checkpointing(_Stateful(self._extra_state, self._load_extra_state))
        self._stop = False
        if resume:
            ck = self.run_dir / CHECKPOINT_DIR
            if not ck.is_dir():
                raise UserError(f"--resume: no checkpoint in {ck}; start without --resume")
            self.acc.load_state(str(ck))

    # -- state -----------------------------------------------------------------------------------
    def _student(self) -> TurboVAEDDecoder:
        return self.acc.unwrap_model(self.model).student

    def _extra_state(self) -> dict:
        return {"step": self.step, "data_rng": self.data.state(), "ema": self.ema.state_dict(),
                "stages": self.stages, "config": self.cfg.to_dict()}

    def _load_extra_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.data.set_state(state["data_rng"])
        self.ema.load_state_dict(state["ema"])

    def save(self) -> None:
        """Checkpoint (resumable) + deployable EMA student weights, each written atomically."""
        if not self.acc.is_main_process:
            return
        ck = self.run_dir / CHECKPOINT_DIR
        tmp = self.run_dir / (CHECKPOINT_DIR + ".tmp")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        self.acc.save_state(str(tmp))
        old = self.run_dir / (CHECKPOINT_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ck.exists():
            ck.rename(old)
        tmp.rename(ck)
        shutil.rmtree(old, ignore_errors=True)
        meta = {"family": self.family.name, "teacher": self.cfg.teacher, "step": self.step}
        save_student(self.ema, self.run_dir / "student.safetensors", extra=meta)

    # -- training --------------------------------------------------------------------------------
    def _lr(self) -> float:
        c = self.cfg
        warm = min(1.0, (self.step + 1) / max(1, c.warmup))
        frac = self.step / max(1, c.steps)
        return c.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, z = self.data.sample(self.cfg.batch)
        x = x.to(self.acc.device)
        if z is None:
            z = teacher_encode(self.teacher, x)
        return x, z.to(self.acc.device)

    def _losses(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        with torch.no_grad(), FeatureTaps(self.teacher) as taps:
            t_rec = teacher_decode(self.teacher, z)
        t_feats = taps.features()
        out, proj = self.model(z)
        losses = {"pixel": (out - x).abs().mean(), "output": (out - t_rec).abs().mean()}
        if self.stages and c.w_feature > 0:
            losses["feature"] = feature_loss(proj, [t_feats[s] for s in self.stages])
        if self.perceptual is not None:
            losses["lpips"] = self.perceptual(out, x)
        if self.disc is not None and self.step >= c.adv_start:
            losses["adv"] = hinge_g_loss(self.disc(out))
        w = {"pixel": c.w_pixel, "output": c.w_output, "feature": c.w_feature, "lpips": c.w_lpips, "adv": c.w_adv}
        losses["total"] = sum(w[k] * v for k, v in losses.items())
        losses["_out"] = out
        return losses

    def _disc_step(self, x: torch.Tensor, fake: torch.Tensor) -> float:
        self.opt_d.zero_grad(set_to_none=True)
        loss = hinge_d_loss(self.disc(x), self.disc(fake.detach()))
        self.acc.backward(loss)
        self.opt_d.step()
        return float(loss)

    def _on_sigint(self, *_):
        self._stop = True

    def train(self) -> dict:
        """Run until ``cfg.steps`` optimizer steps (or SIGINT: save and stop). Returns the last log row."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        c = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "distill.json").write_text(json.dumps(c.to_dict(), indent=2))
        log_path = self.run_dir / "log.jsonl"
        prev = signal.signal(signal.SIGINT, self._on_sigint)
        row: dict = {}
        t_start = time.time()
        try:
            with Progress(TextColumn("[bold]distill[/] step {task.completed}/{task.total}"), BarColumn(),
                          TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                          disable=not self.acc.is_main_process, transient=False) as bar:
                task = bar.add_task("distill", total=c.steps, completed=self.step, info="")
                while self.step < min(c.steps, c.stop_at or c.steps) and not self._stop:
                    t0 = time.time()
                    for g in self.opt.param_groups:
                        g["lr"] = self._lr()
                    agg: dict[str, float] = {}
                    for _ in range(c.accum):
                        with self.acc.accumulate(self.model):
                            x, z = self._batch()
                            losses = self._losses(x, z)
                            self.acc.backward(losses["total"])
                            if self.acc.sync_gradients:
                                self.acc.clip_grad_norm_(self.model.parameters(), 1.0)
                            self.opt.step()
                            self.opt.zero_grad(set_to_none=True)
                            if self.disc is not None and self.step >= c.adv_start:
                                agg["disc"] = agg.get("disc", 0.0) + self._disc_step(x, losses["_out"]) / c.accum
                        for k, v in losses.items():
                            if not k.startswith("_"):
                                agg[k] = agg.get(k, 0.0) + float(v.detach()) / c.accum
                    self.step += 1
                    with torch.no_grad():
                        for pe, ps in zip(self.ema.parameters(), self._student().parameters(), strict=True):
                            pe.lerp_(ps.detach(), 1 - c.ema)
                    dt = time.time() - t0
                    row = {"step": self.step, "time_s": round(time.time() - t_start, 2), "step_s": round(dt, 3),
                           "lr": self._lr(), **{k: round(v, 6) for k, v in agg.items()}}
                    if self.acc.is_main_process and (self.step % c.log_every == 0 or self.step == c.steps):
                        with log_path.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                    bar.update(task, completed=self.step,
                               info=f"loss {agg['total']:.4f}  px {agg['pixel']:.4f}  {dt:.2f}s/step")
                    if self.step % c.save_every == 0:
                        self.save()
            self.save()
        finally:
            signal.signal(signal.SIGINT, prev)
        row["interrupted"] = self._stop
        return row
