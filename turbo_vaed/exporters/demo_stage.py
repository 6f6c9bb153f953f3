"""Demo stage: export the demo student at 256p to every target and check parity where a runtime exists here."""

from __future__ import annotations

from turbo_vaed.errors import UserError

DEMO_RES = "256p"
# (target, delegate, precision): the phone defaults of each preset
DEMO_EXPORTS = (("coreml", None, "fp16"), ("executorch", "xnnpack", "fp32"), ("onnx", None, "fp32"))


def export_stage(ctx, res: str = DEMO_RES, latent_frames: int | None = None, threads: int | None = None) -> dict:
    """Export ``ctx.student`` into ``ctx.out_dir / "artifacts"``; parity on ``ctx.latents`` (or random latents).

    Stores ``ctx.results["export"]`` and returns it: ``{"res", "rows": [one dict per artifact]}``.
    Core ML prediction needs macOS: elsewhere the Core ML row's parity comes from the MIL reference evaluator
    (the saved ML program evaluated op by op, fp16 emulated), and says so.
    """
    from turbo_vaed.exporters import export_artifact
    from turbo_vaed.parity import run_parity

    out = ctx.out_dir / "artifacts"
    rows = []
    for target, delegate, precision in DEMO_EXPORTS:
        res_ = export_artifact(ctx.student, target, res, latent_frames=latent_frames, precision=precision,
                               out_dir=out, delegate=delegate, name=f"{ctx.family}-student-{target}-{res}")
        m = res_.manifest
        row = {"target": target, "delegate": delegate, "precision": precision, "artifact": str(res_.artifact),
               "size_bytes": m["size_bytes"], "export_s": m["export_seconds"], "max_rank": m["report"]["max_rank"],
               "partitions": m["report"]["partitions"], "slow_path_ops": m["report"]["slow_path_ops"],
               "gflops_per_frame": m["report"]["gflops_per_frame"], "parity": None, "note": ""}
        try:
            row["parity"] = run_parity(res_.artifact, latents=ctx.latents, reference=ctx.student, threads=threads)
            if row["parity"].get("evaluator") == "mil-reference":
                row["note"] = "MIL reference evaluator (Core ML prediction needs macOS)"
        except UserError as e:
            row["note"] = str(e)
        rows.append(row)
    result = {"res": res, "rows": rows}
    ctx.results["export"] = result
    return result


def export_table(result: dict):
    """Rich table of the export stage (for ``turbovaed demo``)."""
    from turbo_vaed.console import Table

    t = Table(title=f"export + parity at {result['res']} (vs the PyTorch reference)")
    for c in ("target", "precision", "size MiB", "export s", "rank", "partitions", "off fast path",
              "max abs err", "PSNR dB", "parity"):
        t.add_column(c, justify="left" if c in ("target", "precision", "off fast path", "parity") else "right")
    for r in result["rows"]:
        p = r["parity"]
        tgt = r["target"] + (f"/{r['delegate']}" if r["delegate"] else "")
        t.add_row(tgt, r["precision"], f"{r['size_bytes'] / 2**20:.2f}", f"{r['export_s']:.1f}", str(r["max_rank"]),
                  str(r["partitions"]), ", ".join(r["slow_path_ops"]) or "none",
                  f"{p['max_abs_error']:.2e}" if p else "-", f"{p['psnr_db']:.1f}" if p else "-",
                  (("passed" if p["passed"] else "FAILED") + (" (MIL ref.)" if p.get("evaluator") == "mil-reference"
                                                              else "")) if p else r["note"] or "-")
    return t
