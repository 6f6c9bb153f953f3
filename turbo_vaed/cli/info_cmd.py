"""``turbovaed info``: families, parameter counts and budgets, FLOPs per output frame."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.config import load_student_config, student_families
from turbo_vaed.console import Table
from turbo_vaed.decoders.student_model import TurboVAEDDecoder, count_parameters
from turbo_vaed.families import get_family
from turbo_vaed.flops import flops_per_frame
from turbo_vaed.jsonio import write_json
from turbo_vaed.teachers import load_teacher, teacher_decoder_parameters

BUDGETS = {"hunyuan": 0.28, "cogvideox": 0.33, "ltx": 0.175, "wan": 0.55}
INFO_RES = ("256p", "480p", "720p")


def family_info(name: str) -> dict:
    """Parameter counts (default teacher config) and student FLOPs per output frame."""
    fam = get_family(name)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = TurboVAEDDecoder(load_student_config(name))
        teacher = load_teacher(name, None)
    ps, pt = count_parameters(student), teacher_decoder_parameters(teacher)
    return {
        "family": name,
        "diffusers_class": fam.diffusers_class,
        "latent_channels": fam.latent_channels,
        "spatial_factor": fam.spatial_factor,
        "temporal_factor": fam.temporal_factor,
        "teacher_decoder_params": pt,
        "student_params": ps,
        "ratio": ps / pt,
        "budget": BUDGETS[name],
        "student_gflops_per_frame": {r: flops_per_frame(student, fam, r) / 1e9 for r in INFO_RES},
    }


@app.command()
def info(
    family: Optional[str] = typer.Option(None, "--family", "-f", help="One family (default: all)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
) -> None:
    """Families, student/teacher parameters and FLOPs per output frame at 256p/480p/720p."""
    names = [get_family(family).name] if family else student_families()
    rows = [family_info(n) for n in names]
    t = Table(title="Turbo-VAED students vs. teacher decoders (default teacher configs)")
    for col in ("family", "latents", "teacher", "student", "ratio / budget",
                *(f"GFLOP/frame {r}" for r in INFO_RES)):
        t.add_column(col, justify="left" if col == "family" else "right")
    for r in rows:
        t.add_row(r["family"], f"{r['latent_channels']}ch /{r['spatial_factor']} /{r['temporal_factor']}t",
                  f"{r['teacher_decoder_params'] / 1e6:.1f}M", f"{r['student_params'] / 1e6:.1f}M",
                  f"{r['ratio']:.1%} / {r['budget']:.1%}",
                  *(f"{r['student_gflops_per_frame'][x]:.1f}" for x in INFO_RES))
    console.print(t)
    if json_path:
        write_json(json_path, {"schema": "turbovaed.info/1", "families": rows})
        console.print(f"wrote {json_path}")
