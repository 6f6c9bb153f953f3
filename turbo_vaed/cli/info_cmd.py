"""``turbovaed info``: families, parameter counts and budgets, FLOPs per output frame.

Two tables: the project's students against their teachers (default diffusers configs, parameter budgets), and the
released decoders (the official Turbo-VAED students and any other architecture that ships full-size configs, see
:func:`turbo_vaed.bench.suite.full_size_configs`) beside the same teachers. Everything is counted on the meta
device: no weights are read or allocated.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path
from typing import Optional

import torch
import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.config import load_student_config, student_families
from turbo_vaed.console import Table
from turbo_vaed.decoders.student_model import TurboVAEDDecoder, count_parameters
from turbo_vaed.families import FAMILIES, get_family, resolve_resolution
from turbo_vaed.flops import FLOPS_LATENT_FRAMES, count_flops, flops_per_frame
from turbo_vaed.jsonio import write_json
from turbo_vaed.teachers import load_teacher, teacher_decoder_parameters

BUDGETS = {"hunyuan": 0.28, "cogvideox": 0.33, "ltx": 0.175, "wan": 0.55}
INFO_RES = ("256p", "480p", "720p")
NO_TEACHER = "none in diffusers"


@cache
def teacher_params(name: str) -> int | None:
    """Decoder parameters of the family's teacher at its default diffusers config (None: no teacher class)."""
    if not get_family(name).has_teacher:
        return None
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return teacher_decoder_parameters(load_teacher(name, None))


def family_info(name: str) -> dict:
    """Parameter counts (default teacher config) and student FLOPs per output frame."""
    fam = get_family(name)
    with torch.device("meta"):
        student = TurboVAEDDecoder(load_student_config(name))
    ps, pt = count_parameters(student), teacher_params(name)
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


def decoder_gflops_per_frame(decoder, res: str, latent_frames: int = FLOPS_LATENT_FRAMES) -> float:
    """GFLOPs per output frame of ``decoder``'s 5-D reference (its own frame rule), counted on the meta device."""
    w, h = resolve_resolution(res, get_family(decoder.family))
    f = decoder.spatial_factor
    z = torch.zeros(1, decoder.latent_channels, latent_frames, h // f, w // f, device="meta")
    return count_flops(decoder, z) / decoder.frames_out(latent_frames) / 1e9


def released_info(arch_name: str, family: str, cfg: dict) -> dict:
    """Parameters, GFLOPs per frame and the teacher ratio of a released decoder's full-size config (meta device)."""
    from turbo_vaed.decoders.store import random_decoder

    with torch.device("meta"):
        dec = random_decoder(arch_name, cfg)
    params = dec.parameters()
    pt = teacher_params(family)
    try:
        gflops: dict[str, float | None] = {r: decoder_gflops_per_frame(dec, r) for r in INFO_RES}
        why = None
    except Exception as e:  # a reference that cannot run on the meta device: no count, said under the table
        gflops, why = dict.fromkeys(INFO_RES), f"{type(e).__name__}: {str(e)[:80]}"
    return {
        "arch": arch_name,
        "name": dec.name,
        "family": family,
        "params": params,
        "teacher_decoder_params": pt,
        "teacher": get_family(family).diffusers_class or f"{NO_TEACHER} 0.42",
        "ratio": params / pt if pt else None,
        "latent_convention": dec.latent_convention,
        "frames_for_3_latent_frames": dec.frames_out(3),
        "gflops_per_frame": gflops,
        "gflops_not_counted": why,
    }


def released_rows(families: list[str]) -> list[dict]:
    """One row per released decoder (architecture with full-size configs) and family in ``families``."""
    from turbo_vaed.bench.suite import full_size_configs, released_architectures

    rows = []
    cfgs = {a: full_size_configs(a) for a in released_architectures()}
    for f in families:  # grouped by family, so each family's decoders sit together
        rows += [released_info(a, f, by_family[f]) for a, by_family in cfgs.items() if f in by_family]
    return rows


def _short(r: dict) -> str:
    """``turbo-vaed`` for ``turbo-vaed-ltx``; a variant name (``taecvx``) as it is."""
    return r["arch"] if r["name"].startswith(r["arch"]) else r["name"]


def _gf(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def students_table(rows: list[dict]) -> Table:
    t = Table(title="The project's students vs. teacher decoders (default teacher configs); "
                    "GFLOPs per output frame")
    for col in ("family", "latents", "teacher", "student", "ratio", "budget", *INFO_RES):
        t.add_column(col, justify="left" if col == "family" else "right")
    for r in rows:
        t.add_row(r["family"], f"{r['latent_channels']} x{r['spatial_factor']} x{r['temporal_factor']}t",
                  f"{r['teacher_decoder_params'] / 1e6:.1f}M", f"{r['student_params'] / 1e6:.1f}M",
                  f"{r['ratio']:.1%}", f"{r['budget']:.1%}",
                  *(f"{r['student_gflops_per_frame'][x]:.1f}" for x in INFO_RES))
    return t


def released_table(rows: list[dict]) -> Table:
    t = Table(title="Released decoders (full-size configs in models/<arch>/) vs. the teacher decoders; "
                    "GFLOPs per output frame")
    for col in ("family", "decoder", "params", "teacher", "ratio", *INFO_RES):
        t.add_column(col, justify="left" if col in ("family", "decoder") else "right")
    for r in rows:
        pt = r["teacher_decoder_params"]
        t.add_row(r["family"], _short(r), f"{r['params'] / 1e6:.1f}M",
                  f"{pt / 1e6:.1f}M" if pt else NO_TEACHER, f"{r['ratio']:.1%}" if r["ratio"] else "-",
                  *(_gf(r["gflops_per_frame"][x]) for x in INFO_RES))
    return t


@app.command()
def info(
    family: Optional[str] = typer.Option(None, "--family", "-f", help="One family (default: all)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
) -> None:
    """Families, student/teacher parameters and FLOPs per output frame at 256p/480p/720p; released decoders."""
    names = [get_family(family).name] if family else list(FAMILIES)
    students = [n for n in names if n in student_families()]
    rows = [family_info(n) for n in students]
    released = released_rows(names)
    if rows:
        console.print(students_table(rows))
    if released:
        console.print(released_table(released))
        for r in released:
            if r["gflops_not_counted"]:
                console.print(f"note: {r['name']}: GFLOPs not counted ({r['gflops_not_counted']})", highlight=False)
    missing = sorted({r["family"] for r in released if r["teacher_decoder_params"] is None})
    if missing:
        console.print(f"note: {', '.join(missing)} has no teacher: diffusers 0.42 has no class for it (Video DC-AE "
                      "is not in diffusers), so steps that need a teacher refuse it", highlight=False)
    if not rows and not released:
        console.print(f"no decoder for family {names[0]} here", highlight=False)
    if json_path:
        write_json(json_path, {"schema": "turbovaed.info/1", "families": rows, "released": released})
        console.print(f"wrote {json_path}", soft_wrap=True)
