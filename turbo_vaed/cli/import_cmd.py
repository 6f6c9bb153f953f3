"""``turbovaed import ARCH``: take a released decoder checkpoint into a turbovaed decoder folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from turbo_vaed.cli.app import app, console


@app.command("import")
def import_cmd(
    arch: str = typer.Argument(..., help="Decoder architecture: turbo-vaed, taehv, flash-vaed (see `turbovaed info`)."),
    weights: Path = typer.Option(..., "--weights", "-w", help="Released weights (.pth / .safetensors); read "
                                 "with weights_only=True, nothing in it is run."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="The checkpoint's JSON config "
                                          "(where the architecture has one)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Architecture variant (default: from the file "
                                          "name, as the original code does)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Decoder folder to write "
                                       "(default out/decoders/ARCH-NAME)."),
) -> None:
    """Import a released decoder; `decode`, `export`, `parity`, `bench`, `eval` take the folder as --checkpoint."""
    from turbo_vaed.decoders.importer import import_decoder
    from turbo_vaed.guards import check_output_dir

    if out is not None:
        check_output_dir(out, "decoder folder")
    with console.status(f"reading {weights.name} as {arch}"):
        res = import_decoder(arch, weights, config, variant, out)
    d = res.decoder
    for note in res.notes:
        console.print(f"note: {note}", highlight=False)
    if res.ignored:
        listed = ", ".join(res.decoder.provenance["ignored"])
        console.print(f"ignored (known extras, not part of the decoder): {listed}", highlight=False)
    console.print(f"imported {arch} for family {d.family}: {d.parameters():,} decoder parameters, "
                  f"{d.latent_convention} latents -> {res.folder}", highlight=False)
