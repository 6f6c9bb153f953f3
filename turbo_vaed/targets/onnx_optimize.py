"""The ONNX graph optimisation every ONNX export runs: onnxscript's default pipeline without its one quadratic rule.

``torch.onnx.export(..., optimize=True)`` runs onnxscript's ``optimize_ir`` (constant folding, the default rewrite
rules, dead-code removal, initialiser lifting, CSE) and its ONNX fusions. One default rule, ``SlicesSplit`` (several
Slices of one tensor -> one Split), matches a multi-output pattern by scanning the graph for every Slice, so its
cost grows with the square of the node count. A banded streaming step is mostly Slices and Concats of its states:
default student, 256p, on the 2-core host, that rule alone takes 5.3 s at 4 bands (1783 nodes after folding) and
79 s at 16 bands (6889 nodes), and the whole export 18 min at 720p with 16 bands and 33 min with 32. It rewrote
nothing in those graphs. Here the same pipeline runs without it.
"""

from __future__ import annotations

import onnx_ir as ir

SKIPPED_RULES = frozenset({"SlicesSplit"})  # quadratic matching (see the module docstring)


def _rules() -> list:
    from onnxscript import rewriter

    return [r for r in rewriter._DEFAULT_REWRITE_RULES if getattr(r, "name", None) not in SKIPPED_RULES]


def optimize_model(model: ir.Model, num_iterations: int = 2) -> ir.Model:
    """Optimise ``model`` in place (onnxscript 0.7's ``optimize_ir`` + ONNX fusions, minus :data:`SKIPPED_RULES`)."""
    import onnx_ir.passes.common as common
    import onnxscript.rewriter.onnx_fusions as onnx_fusions
    from onnxscript import rewriter
    from onnxscript.optimizer import _constant_folding as folding

    loop = ir.passes.PassManager(
        [folding.FoldConstantsPass(shape_inference=True,
                                   input_size_limit=folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                   output_size_limit=folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT),
         rewriter.RewritePass(_rules()),
         common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
        steps=num_iterations, early_stop=True)
    ir.passes.Sequential(
        common.InlinePass(), loop, common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(), common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(), common.OutputFixPass(), common.NameFixPass(),
    )(model)
    onnx_fusions.fuse(model)
    return model
