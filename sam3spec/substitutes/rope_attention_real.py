"""The tracker's memory attention (`sam3.sam.transformer.RoPEAttention`) without complex numbers or in-place
writes, for export.

`RoPEAttention.forward` rotates q and k with `apply_rotary_enc` (complex64 `view_as_complex` times a complex
table kept as a plain attribute), which TVM's frontend cannot import, and writes the rotated keys back with
`k[:, :, :n] = ...`. This forward does the same arithmetic on (even, odd) channel pairs,
(a + ib)(c + is) = (ac - bs) + i(as + bc), reading cos/sin from buffers `prepare` takes from `freqs_cis`, and
puts the keys together with a concatenation: the first `k_len - num_k_exclude_rope` keys (the memory frames'
tokens, each frame rotated by the same table, which `rope_k_repeat` repeats) are rotated, the object-pointer
tokens after them are not. The table must match the query length, as at the manifest's feature size.

replace: sam3.sam.transformer:RoPEAttention.forward   with: sam3spec.substitutes.rope_attention_real:forward
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3spec.substitutes.rope_real import _rotate


def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
    """RoPEAttention.forward (sam/transformer.py:294) in real arithmetic, eval mode."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    cos, sin = self.freqs_cos, self.freqs_sin
    torch._check(cos.shape[0] == q.shape[-2], lambda: "RoPE table does not match the query length")
    q = _rotate(q, cos, sin)
    rotated = k[:, :, : k.shape[-2] - num_k_exclude_rope]
    if self.rope_k_repeat:  # every memory frame gets the query's table (apply_rotary_enc's repeat_freqs_k)
        b, h, n, d = rotated.shape
        frames = rotated.reshape(b, h * (n // q.shape[-2]), q.shape[-2], d)
        rotated = _rotate(frames, cos, sin).reshape(b, h, n, d)
    else:
        rotated = _rotate(rotated, cos, sin)
    k = torch.cat([rotated, k[:, :, k.shape[-2] - num_k_exclude_rope:]], dim=2) if num_k_exclude_rope else rotated
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
    return self.out_proj(self._recombine_heads(out))


def prepare(root: nn.Module) -> None:
    """Give each RoPEAttention under `root` real buffers `freqs_cos`/`freqs_sin` from its complex table."""
    from sam3.sam.transformer import RoPEAttention

    for module in root.modules():
        if isinstance(module, RoPEAttention) and "freqs_cos" not in module._buffers:
            module.register_buffer("freqs_cos", module.freqs_cis.real.float().contiguous())
            module.register_buffer("freqs_sin", module.freqs_cis.imag.float().contiguous())
