"""Static reshapes as views in a module with symbolic shapes.

TVM's RewriteDataflowReshape turns each legalized reshape kernel back into ``R.reshape``, which the VM runs as a
view of its input, no copy; it fails on a symbolic reshape ("padding factor ... is not divisible"), so the
pipelines leave it out of any module with dynamic shapes, and there every reshape became a copy kernel
(scoring_box_head's [1200, 256] <-> [6, 1, 200, 256]: three kernels, 0.17 of its 3.6 ms on the CPU). This pass is
its static half: a call_tir whose kernel TVM's own ``has_reshape_pattern`` recognises, with static shapes on
both sides, becomes ``R.reshape``; symbolic ones stay kernels.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax

from sam3spec.pipelines import rewrite_pass, static_shape

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


@relax.expr_functor.mutator
class _Views(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod, self.in_dataflow = mod, False

    def visit_dataflow_block_(self, block):  # pylint: disable=arguments-renamed
        self.in_dataflow = True  # views are only safe where nothing is written in place (as RewriteDataflowReshape)
        try:
            return super().visit_dataflow_block_(block)
        finally:
            self.in_dataflow = False

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not (self.in_dataflow and call.op.same_as(_CALL_TIR) and len(call.args) == 2
                and isinstance(call.args[1], relax.Tuple) and len(call.args[1].fields) == 1):
            return call
        func = self.mod[call.args[0]]
        source, shape = call.args[1].fields[0], static_shape(call)
        source_shape = static_shape(source)
        if not isinstance(func, tvm.tirx.PrimFunc) or shape is None or source_shape is None:
            return call
        if math.prod(shape) != math.prod(source_shape):
            return call  # has_reshape_pattern also takes a leading slice ([201, 1, 256] -> its first row)
        if getattr(source.ty, "dtype", None) != getattr(call.ty, "dtype", None):
            return call
        if not relax.analysis.has_reshape_pattern(func):
            return call
        return relax.op.reshape(source, shape)


def static_views() -> tvm.transform.Pass:
    """The rewrite (in place of RewriteDataflowReshape, where shapes are symbolic)."""
    return rewrite_pass(_Views, "sam3spec.StaticReshapeViews")
