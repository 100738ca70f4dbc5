"""Few queries over many keys: the key and value projections move to the queries and the output
(sam3spec.pipelines.absorb_projection). Compiled on the CPU against PyTorch at several query counts, and the
rewrite checked on the Relax module: the keys' N x C projections are gone where n < head dim, kept otherwise."""

import numpy as np
import pytest
import torch
import torch.nn as nn

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from sam3spec.converters.linear_2d import linear_2d  # noqa: E402
from sam3spec.converters.sdpa_matmul import sdpa_matmul  # noqa: E402
from sam3spec.pipelines import absorb_projection  # noqa: E402
from sam3spec.pipelines import cpu as cpu_basic  # noqa: E402
from sam3spec.runtime.compile import tvm_target  # noqa: E402
from sam3spec.runtime.loader import transform_params  # noqa: E402

TARGET = tvm_target({"kind": "llvm", "mcpu": "host", "num-cores": 2})
KEYS, CHANNELS = 96, 64
CONVERTERS = {"linear.default": linear_2d, "scaled_dot_product_attention.default": sdpa_matmul}  # as the manifest


class SeqFirst(nn.Module):
    """SAM3's geometry encoder: torch's MultiheadAttention, sequence first, keys = image + pos, values = image."""

    def __init__(self, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(CHANNELS, heads)

    def forward(self, queries, image, pos):
        return self.attn(queries, image + pos, image, need_weights=False)[0]


class BatchFirst(nn.Module):
    """SAM's two-way transformer Attention: own q/k/v projections to half the width, heads split batch first."""

    def __init__(self, heads):
        super().__init__()
        self.heads, inner = heads, CHANNELS // 2
        self.q, self.k, self.v, self.out = (nn.Linear(CHANNELS, inner), nn.Linear(CHANNELS, inner),
                                            nn.Linear(CHANNELS, inner), nn.Linear(inner, CHANNELS))

    def forward(self, queries, image, pos):
        def split(x):
            b, n, c = x.shape
            return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.q(queries)), split(self.k(image + pos)), split(self.v(image))
        attn = torch.softmax(q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out(out.reshape(out.shape[0], out.shape[1], -1))


def _inputs(module, n):
    seq_first = isinstance(module, SeqFirst)
    shape = (lambda rows: (rows, 1, CHANNELS)) if seq_first else (lambda rows: (1, rows, CHANNELS))
    return torch.randn(shape(n)), torch.randn(shape(KEYS)), torch.randn(shape(KEYS)), (0 if seq_first else 1)


def _relax(module, max_queries):
    torch.manual_seed(3)
    queries, image, pos, axis = _inputs(module, 5)
    n = torch.export.Dim("n", min=1, max=max_queries)
    ep = torch.export.export(module.eval(), (queries, image, pos), dynamic_shapes=({axis: n}, {}, {}))
    return relax.frontend.detach_params(from_exported_program(ep, keep_params_as_input=True,
                                                              run_ep_decomposition=False,
                                                              custom_convert_map=CONVERTERS))


def _key_projections(mod) -> int:
    """Matmuls whose result has one row per key: the key and value projections."""
    return sum(1 for line in mod.script().splitlines()
               if "R.matmul(" in line and f"R.Tensor(({KEYS}, " in line.split("=")[0])


@pytest.mark.parametrize("make", [lambda: SeqFirst(4), lambda: BatchFirst(2)], ids=["seq_first", "batch_first"])
def test_projections_absorbed_and_equal_to_pytorch(make):
    torch.manual_seed(0)
    module = make()
    mod, params = _relax(module, max_queries=8)  # head dim 16 (seq first) and 16 (batch first): 8 < 16
    assert _key_projections(mod) == 2
    assert _key_projections(tvm.transform.Sequential(absorb_projection.absorb())(mod)) == 0
    pipe = cpu_basic.pipeline(TARGET, absorb_projections=True)
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET, relax_pipeline=pipe), tvm.cpu())
    weights = [tvm.runtime.tensor(p.numpy()) for p in params["main"]]
    weights = transform_params(vm, weights) or weights
    for n in (1, 5, 8):
        queries, image, pos, _ = _inputs(module, n)
        got = vm["main"](*[tvm.runtime.tensor(a.numpy()) for a in (queries, image, pos)], *weights)
        got = got if hasattr(got, "numpy") else got[0]
        with torch.no_grad():
            expected = module(queries, image, pos).numpy()
        np.testing.assert_allclose(got.numpy(), expected, atol=2e-5, rtol=1e-4)


def test_as_many_queries_as_the_head_dim_keep_the_projections():
    """At n_max = 16 = head dim the absorbed form would not save multiply-adds: the module stays as it was."""
    mod, _ = _relax(SeqFirst(4), max_queries=16)
    assert _key_projections(tvm.transform.Sequential(absorb_projection.absorb())(mod)) == 2
