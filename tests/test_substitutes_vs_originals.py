"""Each stand-in against the very code it replaces, where that code runs: a CUDA machine with torchvision
and triton (the device machine). Skipped on CPU-only machines, where the scalar references in
test_substitute_roi_align.py and the brute force in test_substitute_edt.py stand in for them.

The rows come from sam3spec.substitutes.originals, which also prints them as a table
(`python -m sam3spec.substitutes.originals`; tools/gpu-run.sh has the device machine's setup).
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3spec.substitutes import originals  # noqa: E402

try:
    import torchvision
    import torchvision.ops
except Exception:  # noqa: BLE001 - PyPI torchvision fails in several ways against a CPU torch
    torchvision = None

needs_torchvision = pytest.mark.skipif(torchvision is None, reason="real torchvision does not import here")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_torchvision
def test_roi_align_equals_torchvision_cpu_and_cuda_kernels():
    """float64: the same bilinear sum to rounding; float32: the kernels sum in another order."""
    rows = originals.roi_align_rows()
    assert {r["device"] for r in rows} == ({"cpu", "cuda"} if torch.cuda.is_available() else {"cpu"})
    for r in rows:
        assert r["max_abs"] < (1e-12 if r["dtype"] == "float64" else 5e-5), r


def test_rope_real_equals_complex_rope():
    """Runs wherever sam3 imports (the CPU too): bit-identical on CPU, within float32 rounding on CUDA."""
    for r in originals.rope_rows():
        assert r["identical"] if r["device"] == "cpu" else r["max_abs"] < 1e-5, r


@needs_cuda
def test_edt_equals_sam3_triton():
    pytest.importorskip("triton")
    rows = originals.edt_rows()
    assert rows and all(r["identical"] for r in rows), rows


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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-rs"]))


def test_detector_step_equals_sams_with_one_device():
    """Runs wherever sam3 imports: the detections identical, the tracker features the very values SAM3 sends
    over NCCL once cast to bfloat16 (which sam3spec leaves out: float32 contract)."""
    rows = originals.detector_step_rows()
    assert len(rows) == 8 and all(r["identical"] for r in rows), rows


def test_connected_components_delegate_and_take_an_empty_batch():
    rows = originals.connected_components_rows()
    assert rows and all(r["identical"] for r in rows), rows
    from sam3spec.substitutes.connected_components_empty import connected_components_cpu

    labels, counts = connected_components_cpu(torch.zeros(0, 1, 8, 8, dtype=torch.bool))
    assert labels.shape == counts.shape == (0, 1, 8, 8)


@needs_torchvision
def test_frame_loading_equals_torchvision():
    rows = originals.frame_rows()
    assert len(rows) == 3 and all(r["identical"] for r in rows), rows
