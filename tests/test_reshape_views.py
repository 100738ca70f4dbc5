"""reshape_views: in a module with symbolic shapes, static reshapes become views (no kernel), symbolic ones stay
kernels, and the values hold."""

import numpy as np

import tvm
from tvm import relax
from tvm.script import relax as R
from tvm.script import tirx as T

from sam3spec.pipelines.cpu import pipeline as cpu_pipeline

ROWS, F32 = "n", "float32"  # TVMScript's annotations, as names (pyflakes reads strings there as code)


@tvm.script.ir_module
class Module:
    @R.function
    def main(x: R.Tensor((1200, 8), F32), p: R.Tensor((ROWS, 8), F32), w: R.Tensor((8, 8), F32)):
        n = T.int64()
        with R.dataflow():
            a = R.matmul(x, w)                            # a matmul takes no reshape into its kernel
            c = R.reshape(a, R.shape([6, 1, 200, 8]))     # static: a view
            d = R.matmul(p, w)
            e = R.reshape(d, R.shape([n, 1, 8]))          # symbolic: stays a kernel
            R.output(c, e)
        return (c, e)


def test_static_reshapes_are_views_where_shapes_are_symbolic():
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    lowered = cpu_pipeline(target, dynamic_shapes=True)(Module)
    script = lowered["main"].script()
    assert script.count("vm.builtin.reshape") == 1, script
    exe = tvm.compile(Module, target=target, relax_pipeline=cpu_pipeline(target, dynamic_shapes=True))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    rng = np.random.default_rng(0)
    x, p, w = (rng.standard_normal(s, dtype=F32) for s in ((1200, 8), (5, 8), (8, 8)))
    c, e = vm["main"](*(tvm.runtime.tensor(a) for a in (x, p, w)))
    np.testing.assert_allclose(c.numpy(), (x @ w).reshape(6, 1, 200, 8), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.numpy(), (p @ w).reshape(5, 1, 8), rtol=1e-5, atol=1e-5)


def test_a_leading_slice_is_not_taken_for_a_reshape():
    """has_reshape_pattern also accepts a kernel copying a tensor's first rows ([201, 1, 256] -> [1, 1, 256]
    in the decoder); the element counts tell them apart."""
    from tvm import te, topi

    from sam3spec.pipelines import reshape_views

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([201, 1, 256], F32))
    with bb.function("main", [x]):
        with bb.dataflow():
            first = bb.emit_te(lambda t: te.compute((1, 1, 256), lambda i, j, k: t[i, j, k]), x)
            out = bb.emit_output(bb.emit_te(topi.reshape, first, (256,)))
        bb.emit_func_output(out)
    calls = [str(e.args[0].name_hint) for e in _calls(reshape_views.static_views()(bb.get())["main"])]
    assert len(calls) == 1 and "reshape" not in calls[0], calls  # the slice stays; the true reshape is a view


def _calls(func):
    found = []
    relax.analysis.post_order_visit(func.body, lambda e: found.append(e) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.call_tir" else None)
    return found
