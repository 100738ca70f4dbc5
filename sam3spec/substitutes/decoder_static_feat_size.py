"""The decoder compares Python ints with 0-d tensors from `spatial_shapes`; export needs the static feature size.

TransformerDecoder.forward passes `(spatial_shapes[0, 0], spatial_shapes[0, 1])` (0-d int64 tensors) as
`feat_size` to `_get_rpb_matrix`, which compares them with the cached Python size
(`self.compilable_stored_size == (H, W)`, decoder.py:339). Under torch.export the tensor values are
unknown, so that comparison fails (`GuardOnDataDependentSymNode: Eq(u0, ...)`). SAM3 has one feature
level of a fixed size (resolution // stride, e.g. 72 x 72), which the decoder already stores in
`compilable_stored_size`: this replacement uses it when the sizes arrive as tensors, checking in eager
mode that the tensors hold that very size, and then runs the original method unchanged.

replace: sam3.model.decoder:TransformerDecoder._get_rpb_matrix
with:    sam3spec.substitutes.decoder_static_feat_size:get_rpb_matrix
"""

from __future__ import annotations

import torch

from sam3.model.decoder import TransformerDecoder

# the upstream method, kept even if this module is imported after the replacement was installed
_ORIGINAL = getattr(TransformerDecoder._get_rpb_matrix, "_sam3spec_original", TransformerDecoder._get_rpb_matrix)


def get_rpb_matrix(self, reference_boxes, feat_size):
    H, W = feat_size
    if isinstance(H, torch.Tensor) or isinstance(W, torch.Tensor):
        static = self.compilable_stored_size
        if static is None:  # no static size configured: behave as upstream (eager only)
            static = (int(H), int(W))
        elif not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            assert (int(H), int(W)) == tuple(static), f"feature size {(int(H), int(W))} != static {static}"
        H, W = (int(v) for v in static)
    return _ORIGINAL(self, reference_boxes, (H, W))


get_rpb_matrix._sam3spec_original = _ORIGINAL
