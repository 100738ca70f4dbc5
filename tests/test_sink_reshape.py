"""sink_reshape: a ViT MLP's GELU and residual add end up beside the matmuls (so FuseOps can fuse them), and the
module still computes what PyTorch does."""

import numpy as np
import torch

import tvm
from tvm import relax
from tvm.script import tirx as T
from tvm.relax.frontend.torch import from_exported_program

from sam3spec.pipelines import sink_reshape


ROWS, F32 = "n", "float32"  # TVMScript's annotations, as names (pyflakes reads strings there as code)


class _Block(torch.nn.Module):
    """A ViT block's MLP half on a [1, H, W, C] map, as SAM3's trunk has it."""

    def __init__(self, dim=32, hidden=48):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)).sigmoid())


def _imported(x):
    torch.manual_seed(0)
    block = _Block().eval()
    program = torch.export.export(block, (x,))
    return block, from_exported_program(program)


def _ops(func) -> list[str]:
    found = []
    relax.analysis.post_order_visit(func.body, lambda e: found.append(e.op.name)
                                    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    return found


def test_mlp_gelu_and_residual_sit_on_the_matmuls_and_values_hold():
    x = torch.randn(1, 6, 5, 32)
    block, mod = _imported(x)
    assert _ops(mod["main"]).count("relax.reshape") >= 4  # the converter's flatten / unflatten around each linear
    sunk = tvm.transform.Sequential(sink_reshape.sink())(mod)
    ops = _ops(sunk["main"])
    # rows in, one reshape back to the map at the end: gelu, sigmoid and both adds run on the matmuls' rows
    assert ops.count("relax.reshape") == 3, ops  # x to rows (twice: fc1's input, the residual) and the result
    assert ops[-1] == "relax.reshape"

    def run(m):
        exe = tvm.compile(m, target="llvm")
        vm = relax.VirtualMachine(exe, tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x.numpy()))[0].numpy()

    with torch.no_grad():
        expected = block(x).numpy()
    before, after = run(mod), run(sunk)
    np.testing.assert_allclose(before, expected, atol=1e-5)
    np.testing.assert_array_equal(after, before)


def test_symbolic_rows_sink_and_a_broadcast_operand_stays():
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((ROWS, 8), F32), b: R.Tensor((8,), F32)):
            n = T.int64()
            with R.dataflow():
                y = R.reshape(x, R.shape([n, 1, 8]))
                z = R.nn.relu(y)
                w = R.reshape(z, R.shape([n, 8]))
                v = R.reshape(w, R.shape([n, 1, 8]))
                u = R.add(v, b)
                R.output(u)
            return u

    sunk = tvm.transform.Sequential(sink_reshape.sink())(Module)
    # relu runs on x itself; the add's operand b broadcasts, so the reshape before it stays
    assert _ops(sunk["main"]) == ["relax.nn.relu", "relax.reshape", "relax.add"]


def test_gpu_pipeline_fuses_gelu_and_residual_into_the_linears():
    from sam3spec.pipelines import gpu_dlight

    _, mod = _imported(torch.randn(1, 6, 5, 32))
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})

    def kernels(**options):
        out = gpu_dlight.pipeline(target, mixed_precision="float16", stop_before_schedule=True, **options)(mod)
        return sorted(g.name_hint for g, f in out.functions_items() if isinstance(f, tvm.tirx.PrimFunc))

    before, after = kernels(), kernels(sink_reshapes=True)
    assert any("gelu" in k and "matmul" not in k for k in before), before
    fc1, fc2 = [k for k in after if "matmul" in k]
    assert "gelu" in fc1 + fc2 and "sigmoid" in fc1 + fc2, after
    # what is left besides the two linears: x's cast to float16 and plain reshapes (views once lowered)
    assert [k for k in after if "matmul" not in k and not k.startswith("reshape")] == ["fused_cast_reshape"], after
