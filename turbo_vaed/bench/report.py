"""Render ``turbovaed.bench/1`` results as a rich table."""

from __future__ import annotations

from rich.console import Console

from turbo_vaed.console import Table

WIDE = 120  # terminals at least this wide get every column


def _units(r: dict) -> str:
    rt = r["runtime"]
    return str(rt.get("compute_units") or (f"{rt['threads']} thr" if rt.get("threads") else "-"))


def _mb(v) -> str:
    return f"{v / 2**20:.0f}" if v else "-"


# (header, left-justified, cell, shown in narrow terminals)
COLUMNS = (
    ("label", True, lambda r: r["label"], True),
    ("device", True, lambda r: f"{r['device']['kind']} ({r['device']['model'][:24]})", False),
    ("runtime", True, lambda r: f"{r['runtime']['name']} {r['runtime'].get('precision', '')}".strip(), False),
    ("prec", True, lambda r: str(r["runtime"].get("precision") or "-"), True),
    ("units/threads", True, _units, False),
    ("size", False, lambda r: f"{r['model']['width']}x{r['model']['height']}", True),
    ("frames", False, lambda r: str(r["model"]["output_frames"]), True),
    ("load ms", False, lambda r: f"{r['cold_start']['load_ms']:.0f}", False),
    ("first ms", False, lambda r: f"{r['cold_start']['first_run_ms']:.0f}", False),
    ("p50 ms", False, lambda r: f"{r['latency_ms']['p50']:.1f}", True),
    ("p90 ms", False, lambda r: f"{r['latency_ms']['p90']:.1f}", False),
    ("min ms", False, lambda r: f"{r['latency_ms']['min']:.1f}", False),
    ("FPS", False, lambda r: f"{r['fps']:.2f}", True),
    ("peak MB", False, lambda r: _mb(r.get("peak_memory_bytes")), True),
    ("artifact MB", False, lambda r: f"{r['model']['artifact_bytes'] / 2**20:.2f}"
     if r["model"].get("artifact_bytes") else "-", False),
)


def results_table(doc: dict, title: str = "benchmark", width: int = WIDE) -> Table:
    """One row per result: device, runtime, shape, cold start, latency, FPS, memory, size.

    Below ``WIDE`` columns only the essential ones are shown (the JSON has everything).
    """
    cols = [c for c in COLUMNS if (c[0] != "prec" if width >= WIDE else c[3])]  # wide: precision in "runtime"
    t = Table(title=title if width >= WIDE else f"{title} (wider terminal or --json: all columns)")
    for head, left, _, _ in cols:
        t.add_column(head, justify="left" if left else "right")
    for r in doc["results"]:
        t.add_row(*(cell(r) for _, _, cell, _ in cols))
    return t


def print_results(doc: dict, title: str = "benchmark", console: Console | None = None) -> None:
    console = console or Console()
    console.print(results_table(doc, title, console.width))
    for r in doc["results"]:
        s = r.get("stream")
        if s:
            console.print(f"{r['label']}: {s['latent_frames']} latent frames in chunks of {s['chunk_latent_frames']} "
                          f"-> {s['frames']} frames; first chunk {s['first_chunk_ms']:.0f} ms"
                          + (f", first frame after {s['first_frame_ms']:.0f} ms ({s.get('calls', '?')} calls in all)"
                             if "first_frame_ms" in s else "") + ", steady "
                          f"{s['steady_chunk_ms']['p50']:.0f} ms/chunk (p50), sustained {s['sustained_fps']:.2f} FPS, "
                          f"peak {r['peak_memory_bytes'] / 2**20:.0f} MB")
    for c in doc.get("comparisons", []):
        console.print(f"speedup {c['candidate']} vs {c['baseline']}: [bold]{c['speedup']:.1f}x[/]")
