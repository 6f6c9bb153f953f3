"""torch.export of the lowered decoder, shared by every exporter."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from turbo_vaed.exporters.phone_report import MAX_RANK, exported_program_report


class CastIO(nn.Module):
    """Runs ``inner`` in ``dtype`` with float32 inputs and outputs (casts inside the graph)."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = copy.deepcopy(inner).to(dtype), dtype

    def forward(self, *xs: torch.Tensor):
        out = self.inner(*(x.to(self.dtype) for x in xs))
        if isinstance(out, tuple | list):
            return tuple(o.to(torch.float32) for o in out)
        return out.to(torch.float32)


def drop_alias_nodes(ep: torch.export.ExportedProgram) -> int:
    """Remove ``aten.alias`` nodes (coremltools: "Unsupported fx node alias"); returns how many."""
    gm = ep.graph_module
    n_dropped = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and "alias" in str(node.target):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            n_dropped += 1
    if n_dropped:
        gm.graph.lint()
        gm.recompile()
    return n_dropped


def export_graph(module: nn.Module, example: torch.Tensor | tuple) -> torch.export.ExportedProgram:
    """torch.export with static shapes, no decompositions (pixel_shuffle stays rank 4), no alias nodes.

    Raises ``RuntimeError`` if the graph breaks the phone invariants (rank > 4, Conv3d, interpolate, dynamic dims).
    """
    with torch.no_grad():
        args = tuple(example) if isinstance(example, tuple | list) else (example,)
        ep = torch.export.export(module.eval(), args, strict=False)
    ep = ep.run_decompositions({})
    drop_alias_nodes(ep)
    rep = exported_program_report(ep)
    if rep["max_rank"] > MAX_RANK or rep["slow_path_ops"]:
        raise RuntimeError(f"lowered graph breaks the phone invariants: max rank {rep['max_rank']}, "
                           f"{', '.join(rep['slow_path_ops'])}")
    return ep


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence converter progress bars and chatter (stdout/stderr, warnings, INFO logs) for a block."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("coremltools", "executorch", "torch.onnx", "torch.export", "root")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
