"""Render ``turbovaed.bench/1`` results as a rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def results_table(doc: dict, title: str = "benchmark") -> Table:
    """One row per result: device, runtime, shape, cold start, latency, FPS, memory, size."""
    t = Table(title=title)
    for c in ("label", "device", "runtime", "units/threads", "size", "frames", "load ms", "first ms",
              "p50 ms", "p90 ms", "min ms", "FPS", "peak MB", "artifact MB"):
        t.add_column(c, justify="left" if c in ("label", "device", "runtime", "units/threads") else "right")
    for r in doc["results"]:
        rt, m, lat = r["runtime"], r["model"], r["latency_ms"]
        units = rt.get("compute_units") or (f"{rt['threads']} thr" if rt.get("threads") else "-")
        mem = r.get("peak_memory_bytes")
        size = m.get("artifact_bytes")
        t.add_row(r["label"], f"{r['device']['kind']} ({r['device']['model'][:24]})",
                  f"{rt['name']} {rt.get('precision', '')}".strip(), str(units),
                  f"{m['width']}x{m['height']}", str(m["output_frames"]),
                  f"{r['cold_start']['load_ms']:.0f}", f"{r['cold_start']['first_run_ms']:.0f}",
                  f"{lat['p50']:.1f}", f"{lat['p90']:.1f}", f"{lat['min']:.1f}", f"{r['fps']:.2f}",
                  f"{mem / 2**20:.0f}" if mem else "-", f"{size / 2**20:.2f}" if size else "-")
    return t


def print_results(doc: dict, title: str = "benchmark", console: Console | None = None) -> None:
    console = console or Console()
    console.print(results_table(doc, title))
    for c in doc.get("comparisons", []):
        console.print(f"speedup {c['candidate']} vs {c['baseline']}: [bold]{c['speedup']:.1f}x[/]")
