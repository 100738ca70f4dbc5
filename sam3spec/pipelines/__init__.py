"""Named compile pipelines that manifests' targets name: `module:pipeline(target, dynamic_shapes) -> Pass`."""

import tvm
from tvm import relax


def rewrite_pass(mutator, name: str) -> tvm.transform.Pass:
    """A module pass that rewrites every Relax function with `mutator` (a relax.PyExprMutator class)."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = mutator(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return _pass


def dataflow_lower_passes(backend, target, dynamic_shapes: bool) -> list:
    """`backend`'s (a tvm.relax.backend.*.pipeline module) dataflow lowering passes. With dynamic shapes,
    RewriteDataflowReshape fails on symbolic reshapes ("padding factor ... is not divisible"): there
    :func:`sam3spec.pipelines.reshape_views.static_views` takes its place, for the static reshapes."""
    from sam3spec.pipelines import reshape_views  # pylint: disable=import-outside-toplevel  (it imports this)

    return [reshape_views.static_views() if dynamic_shapes and p.info.name == "RewriteDataflowReshape" else p
            for p in backend.dataflow_lower_passes(target)]


def static_shape(expr, skip: int = 0) -> list[int] | None:
    """The shape of a Relax expression from axis `skip` on, or None where a size is symbolic or unknown."""
    dims = shape_of(expr)
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims[skip:]):
        return None
    return [int(d) for d in dims[skip:]]


def shape_of(expr) -> list | None:
    """A Relax expression's shape as a list of PrimExprs (symbolic sizes included), or None where it is unknown."""
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    return list(shape.values) if isinstance(shape, relax.ShapeExpr) else None


def bound_call(mutator: relax.PyExprMutator, expr, op: tvm.ir.Op):
    """The call that `expr` (a dataflow var) is bound to when it calls `op`, else None."""
    call = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else None
    return call if isinstance(call, relax.Call) and call.op.same_as(op) else None


def plain_conv2d(attrs, kernel_layout: str) -> bool:
    """NCHW in and out, the given kernel layout, one group, no padding, no dilation."""
    return (attrs.data_layout == "NCHW" and attrs.kernel_layout == kernel_layout and attrs.out_layout == "NCHW"
            and int(attrs.groups) == 1 and all(int(v) == 0 for v in attrs.padding)
            and all(int(v) == 1 for v in attrs.dilation))
