"""The decoder FFN's `autocast(enabled=False)` block exports as a `wrap_with_autocast` op TVM cannot import.

TransformerDecoderLayer.forward_ffn (decoder.py:74) runs its two linears inside
`torch.amp.autocast(device_type="cuda", enabled=False)`, to keep them in fp32 under mixed precision.
torch.export records that block as the higher-order op `wrap_with_autocast` even when no autocast is
active, and the TVM Relax frontend rejects it ("Unsupported function types ['wrap_with_autocast']").
When CUDA autocast is off, the block changes nothing: this replacement runs the same layers without the
context manager then, and keeps it (exactly as upstream) when CUDA autocast is on.

replace: sam3.model.decoder:TransformerDecoderLayer.forward_ffn
with:    sam3spec.substitutes.decoder_ffn_no_autocast:forward_ffn
"""

from __future__ import annotations

import contextlib

import torch


def forward_ffn(self, tgt):
    active = torch.is_autocast_enabled("cuda")
    with torch.amp.autocast(device_type="cuda", enabled=False) if active else contextlib.nullcontext():
        tgt2 = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
    tgt = tgt + self.dropout4(tgt2)
    tgt = self.norm3(tgt)
    return tgt
