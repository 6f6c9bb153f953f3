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
from turbo_vaed.decoders.student_model import AlignmentHeads, TurboVAEDDecoder
from turbo_vaed.distill.config import DistillConfig
from turbo_vaed.distill.latent_cache import CachedClips
from turbo_vaed.distill.losses import (
    PatchDiscriminator3D,
    Perceptual,
    feature_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from turbo_vaed.distill.state import is_complete, recover
from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family
from turbo_vaed.resolve import REFERENCE_STUDENT_CONFIG, resolve_family, resolve_teacher, uses_reference
from turbo_vaed.teachers import FeatureTaps, teacher_decode, teacher_encode

CHECKPOINT_DIR = "checkpoint"
# settings a resumed run may change (they do not change the numbers of the next step)
RESUMABLE_CHANGES = ("stop_at", "save_every", "log_every", "threads", "grad_checkpointing")


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

        cfg.validate()
        self.cfg, self.run_dir, self.console = cfg, Path(run_dir), console
        self.resumed_from: str | None = None
        ck = self.run_dir / CHECKPOINT_DIR
        if resume:
            self.resumed_from = recover(ck)  # a save cut between its two renames
            if not is_complete(ck):
                why = (" (it was written by an older turbovaed with pickles, which are never loaded)"
                       if ck.is_dir() and any(ck.glob("*.pkl")) else "")
                raise UserError(f"--resume: no resumable checkpoint in {ck}{why}; start without --resume")
            self._check_same_settings(ck)
        elif ck.exists() or (self.run_dir / "log.jsonl").exists():
            raise UserError(f"run folder {self.run_dir} already holds a run: pass --resume to continue it, or "
                            "choose another -o")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cuda = torch.cuda.is_available()
        mp = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if cuda else "no")
        if mp == "fp16" and not cuda:
            raise UserError("--mixed-precision fp16 needs a GPU: use bf16 or no on CPU")
        try:
            self.acc = Accelerator(cpu=not cuda, mixed_precision=mp, gradient_accumulation_steps=cfg.accum)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"cannot set up training ({type(e).__name__}: {str(e).splitlines()[0][:160]}): check "
                            "--mixed-precision and the accelerate config") from None
        family = resolve_family(cfg.family, cfg.teacher)
        self.family = get_family(family)
        cfg.family = family
        self.frames = self.family.frames_out(cfg.latent_frames)
        if cfg.res % self.family.spatial_factor:
            raise UserError(f"--crop {cfg.res} is not divisible by the {family} spatial factor "
                            f"{self.family.spatial_factor}: use a multiple of it")
        # data
        if cfg.latent_cache:
            self.data = CachedClips(Path(cfg.latent_cache), family, seed=cfg.seed,
                                    clip_shape=(3, self.frames, cfg.res, cfg.res))
        else:
            self.data = ClipSampler(find_videos(cfg.videos), self.frames, cfg.res, cfg.max_frames, seed=cfg.seed)
        # models
        self.teacher = resolve_teacher(cfg.teacher, family).to(self.acc.device)
        torch.manual_seed(cfg.seed)
        if cfg.init_checkpoint:
            from turbo_vaed.checkpoint import load_student

            student = load_student(cfg.init_checkpoint, family).train()
            from turbo_vaed.guards import check_weights_finite

            check_weights_finite(student, f"--init {cfg.init_checkpoint}", "start from another checkpoint")
        else:
            name = cfg.student_config or (REFERENCE_STUDENT_CONFIG if uses_reference(family, cfg.teacher) else family)
            from turbo_vaed.guards import reading

            with reading(name, "student config", "fix it or pass another --student-config"):
                scfg = load_student_config(name)
            if scfg.family != family:
                raise UserError(f"student config {name} is for {scfg.family}, not {family}: pass --student-config")
            student = TurboVAEDDecoder(scfg)
        z0 = torch.zeros(1, self.family.latent_channels, cfg.latent_frames,
                         cfg.res // self.family.spatial_factor, cfg.res // self.family.spatial_factor,
                         device=self.acc.device)
        t_widths = teacher_feature_widths(self.teacher, z0)
        n_taps = min(len(t_widths), len(student.stages))
        far = [s for s in cfg.feature_stages if s >= n_taps]
        if far and cfg.w_feature > 0 and tuple(cfg.feature_stages) != DistillConfig.feature_stages:
            raise UserError(f"--feature-stages {','.join(map(str, far))}: the student and teacher share stages "
                            f"0..{n_taps - 1} only; pick from those")
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
        self._stop: str | None = None
        if resume:
            self._load(ck)

    # -- state -----------------------------------------------------------------------------------
    def _student(self) -> TurboVAEDDecoder:
        return self.acc.unwrap_model(self.model).student

    def _check_same_settings(self, ck: Path) -> None:
        """A resumed run must train as the saved one would have: one line naming what changed."""
        from turbo_vaed.distill.state import STATE_FILE
        from turbo_vaed.guards import read_json

        saved = read_json(ck / STATE_FILE, "training state", max_bytes=64 * 2**20).get("config")
        if not isinstance(saved, dict):
            raise UserError(f"--resume: {ck / STATE_FILE} records no settings: start a new run")
        now = self.cfg.to_dict()
        changed = [k for k in now if k not in RESUMABLE_CHANGES and k in saved and k != "family"
                   and saved[k] != now[k]]
        if self.cfg.family is not None and saved.get("family") not in (None, self.cfg.family):
            changed.insert(0, "family")
        if changed:
            k = changed[0]
            raise UserError(f"--resume with changed settings: {k} was {saved.get(k)!r}, now {now.get(k)!r}"
                            f"{f' (and {len(changed) - 1} more)' if len(changed) > 1 else ''}: resume with the "
                            "saved settings (see distill.json), or start a new run in another -o")

    def _optimizers(self) -> dict:
        opts = {"opt": self.opt}
        if self.opt_d is not None:
            opts["opt_d"] = self.opt_d
        return opts

    def _load(self, ck: Path) -> None:
        """Restore everything the next step depends on from ``ck`` (safetensors + JSON; nothing unpickled)."""
        from turbo_vaed.distill.state import read_checkpoint, restore_rng, unflatten_state_dict

        model_sd, tensors, doc = read_checkpoint(ck)
        src = f"checkpoint {ck}"
        try:
            self.acc.unwrap_model(self.model).load_state_dict(model_sd, strict=True)
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}, strict=True)
            if self.disc is not None:
                self.acc.unwrap_model(self.disc).load_state_dict(
                    {k[5:]: v for k, v in tensors.items() if k.startswith("disc/")}, strict=True)
            for name, opt in self._optimizers().items():
                if name not in doc.get("optimizers", {}):
                    raise UserError(f"{src} has no {name} state: resume with the saved settings")
                opt.load_state_dict(unflatten_state_dict(doc["optimizers"][name], tensors, src))
            if self.acc.scaler is not None and doc.get("scaler") is not None:
                self.acc.scaler.load_state_dict(unflatten_state_dict(doc["scaler"], tensors, src))
            self.data.set_state(unflatten_state_dict(doc["data_rng"], tensors, src))
            self.step = int(doc["step"])
        except UserError:
            raise
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
            raise UserError(f"{src} does not fit this run ({type(e).__name__}: {str(e).splitlines()[0][:160]}): "
                            "resume with the saved settings, or start a new run") from None
        if not 0 <= self.step <= self.cfg.steps:
            raise UserError(f"{src} is at step {self.step}, outside 0..--steps {self.cfg.steps}: resume with the "
                            "saved --steps")
        restore_rng(doc.get("rng"), tensors, src)

    def save(self) -> None:
        """Checkpoint (resumable) + deployable EMA student weights, each written atomically."""
        if not self.acc.is_main_process:
            return
        import shutil

        from turbo_vaed.distill.state import capture_rng, flatten_state_dict, write_checkpoint

        ck = self.run_dir / CHECKPOINT_DIR
        tmp = self.run_dir / (CHECKPOINT_DIR + ".tmp")
        old = self.run_dir / (CHECKPOINT_DIR + ".old")
        tensors: dict[str, torch.Tensor] = {f"ema/{k}": v for k, v in self.ema.state_dict().items()}
        if self.disc is not None:
            tensors.update({f"disc/{k}": v for k, v in self.acc.unwrap_model(self.disc).state_dict().items()})
        doc = {
            "step": self.step, "config": self.cfg.to_dict(), "stages": self.stages,
            "optimizers": {n: flatten_state_dict(o.state_dict(), n, tensors) for n, o in self._optimizers().items()},
            "scaler": (flatten_state_dict(self.acc.scaler.state_dict(), "scaler", tensors)
                       if self.acc.scaler is not None else None),
            "data_rng": flatten_state_dict(self.data.state(), "data", tensors),
            "rng": capture_rng(tensors),
        }
        shutil.rmtree(tmp, ignore_errors=True)
        write_checkpoint(tmp, self.acc.unwrap_model(self.model).state_dict(), tensors, doc)
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

    def _on_signal(self, signum, _frame) -> None:
        if self._stop:  # a second signal: stop now (the last save stays)
            if self.console is not None:
                self.console.print(f"interrupted again: stopping now; the checkpoint of step "
                                   f"{self.step - self.step % self.cfg.save_every} stays")
            raise KeyboardInterrupt
        self._stop = signal.Signals(signum).name  # finish this step, save, stop

    def _trim_log(self, log_path: Path) -> None:
        """On resume: drop log rows past the checkpoint's step (written after its last save) and torn lines."""
        if not log_path.is_file():
            return
        keep = []
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                if isinstance(row, dict) and int(row.get("step", 0)) <= self.step:
                    keep.append(line)
            except (ValueError, TypeError):
                continue
        from turbo_vaed.fileio import write_bytes

        write_bytes(log_path, "".join(k + "\n" for k in keep).encode())

    def train(self) -> dict:
        """Run until ``cfg.steps`` optimizer steps (or SIGINT: save and stop). Returns the last log row."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from turbo_vaed.jsonio import write_json

        c = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "distill.json", c.to_dict())
        log_path = self.run_dir / "log.jsonl"
        self._trim_log(log_path)
        prev = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                prev[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
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
            for sig, handler in prev.items():
                signal.signal(sig, handler)
        row["interrupted"] = self._stop
        return row
