import numpy as np
import pytest
import torch

from sam3spec.substitutes import edt
from sam3spec.substitutes.edt import edt_triton


def reference_edt(data):
    """Brute force, per pixel: sqrt of min over False pixels of the squared distance; sam3's Triton kernel
    starts True pixels at 1e18 in float32, so an image without False pixels gives sqrt(float32(1e18))."""
    out = np.empty(data.shape, dtype=np.float32)
    for b, image in enumerate(data.numpy()):
        zeros = np.argwhere(~image)
        if len(zeros) == 0:
            out[b] = np.sqrt(np.float32(1e18))
            continue
        pixels = np.argwhere(np.ones_like(image))
        squared = ((pixels[:, None, :] - zeros[None, :, :]) ** 2).sum(-1).min(1)
        out[b] = np.sqrt(squared.astype(np.float32)).reshape(image.shape)
    return torch.from_numpy(out)


@pytest.mark.parametrize("shape, density", [((1, 1, 1), 0.5), ((2, 5, 8), 0.7), ((3, 17, 13), 0.9),
                                            ((2, 40, 33), 0.97), ((1, 64, 64), 0.995)])
def test_random_masks(shape, density):
    data = torch.rand(shape, generator=torch.Generator().manual_seed(shape[1])) < density
    got = edt_triton(data)
    expected = reference_edt(data)
    assert got.dtype == torch.float32 and got.shape == data.shape
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_chunked_rows(monkeypatch):
    data = torch.rand(2, 23, 19, generator=torch.Generator().manual_seed(5)) < 0.95
    monkeypatch.setattr(edt, "_CHUNK_ELEMENTS", 3 * 23 * 23)  # 3 rows per chunk, a ragged last chunk
    assert torch.equal(edt_triton(data), reference_edt(data))


def test_edge_cases():
    data = torch.zeros(3, 6, 7, dtype=torch.bool)
    data[1] = True  # no False pixel: 1e18 everywhere, sqrt -> 1e9
    data[2, :, 2:] = True  # distance to column 1
    got = edt_triton(data)
    assert torch.equal(got[0], torch.zeros(6, 7))
    assert torch.equal(got[1], torch.full((6, 7), 1e9))
    assert torch.equal(got[2], (torch.arange(7) - 1).clamp(min=0).float().expand(6, 7))
    assert torch.equal(got, reference_edt(data))


def test_padded_mask_as_sam3_uses_it():
    """sam3_tracker_utils pads with a False border: a filled square's centre is at its half-width + 1."""
    data = torch.zeros(1, 33, 33, dtype=torch.bool)
    data[0, 1:-1, 1:-1] = True
    got = edt_triton(data)
    assert got.max() == 16 and got[0, 16, 16] == 16
