"""SAM3's constructors hardcode device="cuda" (position_encoding.py:47, decoder.py:281): build on CPU instead.

Each replacement runs the original code with "cuda" swapped for "cpu" when no CUDA device is present;
the tensors they make are identical.

replace: sam3.model.position_encoding:PositionEmbeddingSine.__init__  with: position_encoding_init
replace: sam3.model.decoder:TransformerDecoder._get_coords           with: decoder_get_coords
"""

from __future__ import annotations

import inspect

import torch
from sam3.model.decoder import TransformerDecoder
from sam3.model.position_encoding import PositionEmbeddingSine

_original_init = PositionEmbeddingSine.__init__
_original_get_coords = TransformerDecoder._get_coords


def _device(device):
    return "cpu" if str(device).startswith("cuda") and not torch.cuda.is_available() else device


def position_encoding_init(self, *args, **kwargs):
    """PositionEmbeddingSine.__init__, with its resolution precompute (stride 4, 8, 16, 32) run on CPU."""
    bound = inspect.signature(_original_init).bind(self, *args, **kwargs)
    resolution = bound.arguments.pop("precompute_resolution", None)
    _original_init(self, **{k: v for k, v in bound.arguments.items() if k != "self"})
    for stride in (4, 8, 16, 32) if resolution is not None else ():
        size = (resolution // stride, resolution // stride)
        self.forward(torch.zeros((1, 1) + size, device=_device("cuda")))
        self.cache[size] = self.cache[size].clone().detach()


def _get_coords(H, W, device):
    return _original_get_coords(H, W, _device(device))


decoder_get_coords = staticmethod(_get_coords)
