"""Each stand-in against the very code it replaces, where that code runs: a CUDA machine with torchvision
and triton (the device machine). Skipped on CPU-only machines, where the scalar references in
test_substitute_roi_align.py and the brute force in test_substitute_edt.py stand in for them.

On the device: SAM3_EDT_PY names sam3/model/edt.py (from the sam3 wheel); run this file with pytest or
`python tests/test_substitutes_vs_originals.py`.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3spec.substitutes.edt import edt_triton as edt_standin  # noqa: E402
from sam3spec.substitutes.roi_align import roi_align as roi_align_standin  # noqa: E402

try:
    import torchvision
    import torchvision.ops
except Exception:  # noqa: BLE001 - PyPI torchvision fails in several ways against a CPU torch
    torchvision = None

needs_torchvision = pytest.mark.skipif(torchvision is None, reason="real torchvision does not import here")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _boxes(k, size, g):
    xy = torch.rand(k, 2, generator=g) * size * 1.2 - size * 0.1          # some start outside the map
    wh = torch.rand(k, 2, generator=g) * size * 0.8 + 0.05
    return torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), xy, xy + wh], 1)


@needs_torchvision
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_equals_torchvision(device, aligned, sampling_ratio):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 16, 72, 72, generator=g, dtype=torch.float64).to(device)
    boxes = _boxes(40, 72, g).double().to(device)
    want = torchvision.ops.roi_align(feats, boxes, 7, 1.0, sampling_ratio, aligned)
    got = roi_align_standin(feats, boxes, 7, 1.0, sampling_ratio, aligned)
    assert (got - want).abs().max().item() < 1e-10


@needs_torchvision
def test_torchvision_transforms_standins_equal_torchvision():
    import sam3spec.substitutes.torchvision_standin.transforms as standin
    from sam3spec.substitutes.torchvision_standin.ops import masks_to_boxes
    from sam3spec.substitutes.torchvision_standin.ops.misc import FrozenBatchNorm2d

    g = torch.Generator().manual_seed(1)
    image = (torch.rand(37, 53, 3, generator=g) * 255).to(torch.uint8).numpy()
    real_tensor, ours_tensor = torchvision.transforms.ToTensor()(image), standin.ToTensor()(image)
    assert torch.equal(real_tensor, ours_tensor)
    for real, ours in ((torchvision.transforms.Resize((64, 64)), standin.Resize((64, 64))),
                       (torchvision.transforms.Normalize([0.5] * 3, [0.5] * 3), standin.Normalize([0.5] * 3, [0.5] * 3))):
        assert (real(real_tensor) - ours(ours_tensor)).abs().max().item() < 1e-5
    masks = torch.rand(5, 30, 40, generator=g) > 0.9
    assert torch.equal(torchvision.ops.masks_to_boxes(masks), masks_to_boxes(masks))
    real_bn, ours_bn = torchvision.ops.misc.FrozenBatchNorm2d(8), FrozenBatchNorm2d(8)
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(8, generator=g) + 0.5
        getattr(real_bn, name).copy_(value), getattr(ours_bn, name).copy_(value)
    x = torch.randn(2, 8, 5, 5, generator=g)
    assert (real_bn(x) - ours_bn(x)).abs().max().item() < 1e-6


@needs_torchvision
@pytest.mark.parametrize("size", [(1008, 1008), (336, 336), (120, 90)])
def test_sam3_processor_transform_standin_equals_torchvision_v2(size):
    """Sam3Processor's transform (sam3_image_processor.py:20) built from the stand-in and from torchvision v2,
    on a PIL photograph-sized image: bit-identical, uint8 resize included."""
    from PIL import Image

    from sam3spec.substitutes.torchvision_standin.transforms import v2 as ours

    def transform(v2):
        return v2.Compose([v2.ToDtype(torch.uint8, scale=True), v2.Resize(size=size),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])

    g = torch.Generator().manual_seed(2)
    pixels = (torch.rand(300, 451, 3, generator=g) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    from torchvision.transforms import v2 as real

    want = transform(real)(real.functional.to_image(image))
    got = transform(ours)(ours.functional.to_image(image))
    assert got.shape == want.shape == (3, *size) and got.dtype == want.dtype == torch.float32
    assert torch.equal(got, torch.as_tensor(want))


@needs_cuda
@pytest.mark.skipif(not os.environ.get("SAM3_EDT_PY"), reason="SAM3_EDT_PY (sam3/model/edt.py) not given")
def test_edt_equals_sam3_triton():
    spec = importlib.util.spec_from_file_location("sam3_edt_original", os.environ["SAM3_EDT_PY"])
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)
    g = torch.Generator().manual_seed(2)
    for shape, density in (((3, 64, 80), 0.7), ((2, 288, 288), 0.97), ((1, 1008, 1008), 0.999)):
        data = (torch.rand(shape, generator=g) < density).cuda()
        want = original.edt_triton(data)
        got = edt_standin(data)
        assert got.dtype == want.dtype and torch.equal(got, want), (shape, (got - want).abs().max().item())
    full = torch.ones(1, 32, 32, dtype=torch.bool).cuda()
    assert torch.equal(edt_standin(full), original.edt_triton(full))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-rs"]))
