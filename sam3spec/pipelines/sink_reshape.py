"""Reshapes moved after the elementwise ops that follow them, so those ops fuse into the producer's kernel.

TVM's ``linear`` converter flattens a [1, H, W, C] input to rows, multiplies, and reshapes back, so a ViT MLP
reads ``reshape(gelu(reshape(fc1(x), 4-D)), 2-D)`` and its residual ``add(r, reshape(fc2(h), 4-D))``. FuseOps
fuses a matmul with the elementwise ops after it, never across a reshape, so GELU and the residual add each
became a kernel of their own that reads and writes the whole activation (on an H100 the trunk's GELU kernel
took 3.6 of its 46 ms). Here ``f(reshape(x, S))`` becomes ``reshape(f(x), S)`` for a unary elementwise ``f``,
and ``g(reshape(x, S), y)`` becomes ``reshape(g(x, reshape(y, shape(x))), S)`` for a binary one whose other
operand has the full shape S; a reshape of a reshape collapses, and one to its input's own shape disappears.
The reshapes left are views (RewriteDataflowReshape). Exact: only where values are stored changes.
"""

from __future__ import annotations

import tvm
from tvm import relax

from sam3spec.pipelines import rewrite_pass, shape_of

_RESHAPE = tvm.ir.Op.get("relax.reshape")
_UNARY = {tvm.ir.Op.get(f"relax.{name}") for name in (
    "nn.gelu", "nn.gelu_tanh", "nn.relu", "nn.silu", "sigmoid", "tanh", "exp", "erf", "sqrt", "rsqrt", "negative",
    "astype")}
_BINARY = {tvm.ir.Op.get(f"relax.{name}") for name in ("add", "subtract", "multiply", "divide")}


def _same(a: list | None, b: list | None) -> bool:
    prove = tvm.sym.Analyzer().can_prove_equal
    return a is not None and b is not None and len(a) == len(b) and all(prove(x, y) for x, y in zip(a, b))


@relax.expr_functor.mutator
class _SinkReshape(relax.PyExprMutator):
    def _reshaped(self, expr):
        """(x, S) when `expr` is a variable bound to reshape(x, S) with both shapes known, else None."""
        bound = expr
        while isinstance(bound, relax.Var):
            bound = self.lookup_binding(bound)
        if not (isinstance(bound, relax.Call) and bound.op.same_as(_RESHAPE)):
            return None
        inner, outer = shape_of(bound.args[0]), shape_of(bound)
        return (bound.args[0], outer) if inner is not None and outer is not None else None

    def _reshape(self, expr, shape: list):
        """reshape(expr, shape), looking through a reshape that made `expr` and dropping one that changes nothing."""
        source = self._reshaped(expr)
        if source is not None:
            expr = source[0]
        return expr if _same(shape_of(expr), shape) else relax.op.reshape(expr, shape)

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op.same_as(_RESHAPE):
            shape = shape_of(call)
            return call if shape is None else self._reshape(call.args[0], shape)
        if call.op in _UNARY and len(call.args) == 1:
            source = self._reshaped(call.args[0])
            if source is not None:
                inner = self.builder_.emit(relax.Call(call.op, [source[0]], call.attrs, call.ty_args))
                return self._reshape(inner, source[1])
        if call.op in _BINARY:
            found = {side: self._reshaped(call.args[side]) for side in (1, 0)}
            sides = [side for side, source in found.items()
                     if source is not None and _same(shape_of(call.args[1 - side]), source[1])]
            if sides:  # the operand reshaped from the fewest dims: a linear's rows rather than the map it adds to
                side = min(sides, key=lambda s: len(shape_of(found[s][0])))
                x, shape = found[side]
                args = [x, self.builder_.emit(self._reshape(call.args[1 - side], shape_of(x)))][::1 if side == 0 else -1]
                inner = self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
                return self._reshape(inner, shape)
        return call


def sink() -> list[tvm.transform.Pass]:
    """The rewrite, then the bindings it left unused removed."""
    return [rewrite_pass(_SinkReshape, "sam3spec.SinkReshape"), relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination()]
