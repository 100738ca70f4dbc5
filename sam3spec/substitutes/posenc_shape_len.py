"""`len(x)` in PositionEmbeddingSine._encode_xy pins the number of boxes/points: a shape-based check keeps it dynamic.

position_encoding.py:54 asserts `len(x) == len(y)`. `Tensor.__len__` must return a Python int, so under
torch.export a symbolic box/point count is specialised to the example value (the exported geometry encoder
then only accepts that many boxes and points). Comparing `x.shape[0] == y.shape[0]` is the same check on
symbolic sizes and leaves the count dynamic. The rest of the method is unchanged.

replace: sam3.model.position_encoding:PositionEmbeddingSine._encode_xy
with:    sam3spec.substitutes.posenc_shape_len:encode_xy
"""

from __future__ import annotations

import torch


def encode_xy(self, x, y):
    # The positions are expected to be normalized
    assert x.shape[0] == y.shape[0] and x.ndim == y.ndim == 1
    x_embed = x * self.scale
    y_embed = y * self.scale

    dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
    dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

    pos_x = x_embed[:, None] / dim_t
    pos_y = y_embed[:, None] / dim_t
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    return pos_x, pos_y
