"""TVM cannot import complex64 tensors: ViTDet's 2-D RoPE rotates q/k with real cos/sin buffers instead.

`sam3.model.vitdet.Attention._apply_rope` calls `apply_rotary_enc`, which views q/k as complex numbers
(`view_as_complex`) and multiplies them by the complex buffer `freqs_cis` ([L, head_dim/2] complex64).
The TVM Relax frontend rejects complex64 (`input_type torch.complex64 is not handled yet`), both as an op
input and as a lifted buffer. This replacement does the same rotation on (even, odd) channel pairs with
real arithmetic:  (a + ib)(c + is) = (ac - bs) + i(as + bc),  reading c/s from the buffers `freqs_cos` /
`freqs_sin` that `prepare` derives from `freqs_cis` (its exact real and imaginary parts). On CPU the
result is bit-identical to the complex path (tests/test_export_patches.py measures it).

replace: sam3.model.vitdet:Attention._apply_rope   with: sam3spec.substitutes.rope_real:apply_rope
prepare(root): every vitdet.Attention under `root` with a complex `freqs_cis` buffer gets real buffers
`freqs_cos`, `freqs_sin` in its place (the complex buffer is removed, so no complex tensor remains in
the exported program; `freqs_cis` is left as a plain None attribute).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (even, odd) channel pairs of x [B, nH, L, D] by angles given as cos/sin [L, D/2]."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xf.unbind(-1)
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(3).type_as(x)


def apply_rope(self, q: Tensor, k: Tensor) -> Tuple[Tensor, Tensor]:
    """Real-valued stand-in for vitdet.Attention._apply_rope (same contract, same numbers)."""
    if not self.use_rope:
        return q, k
    cos, sin = self.freqs_cos, self.freqs_sin
    assert cos.shape == (q.shape[-2], q.shape[-1] // 2), "RoPE table does not match the sequence"
    if k.shape[-2] == 0:  # as apply_rotary_enc: no keys to rotate
        return _rotate(q, cos, sin), k
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def prepare(root: nn.Module) -> None:
    """Replace each vitdet.Attention's complex `freqs_cis` buffer by real `freqs_cos`/`freqs_sin` buffers."""
    from sam3.model.vitdet import Attention

    for module in root.modules():
        if not isinstance(module, Attention) or not module.use_rope:
            continue
        cis = module._buffers.get("freqs_cis")
        if cis is None or not cis.is_complex():
            continue  # already prepared
        del module._buffers["freqs_cis"]
        module.freqs_cis = None
        module.register_buffer("freqs_cos", cis.real.contiguous())
        module.register_buffer("freqs_sin", cis.imag.contiguous())
