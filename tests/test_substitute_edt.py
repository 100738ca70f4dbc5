import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3spec import manifest
from sam3spec.runtime import substitute
from sam3spec.substitutes import edt
from sam3spec.substitutes.edt import edt_triton

ROOT = Path(__file__).resolve().parents[1]


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


# keep_original_if: a whole-module substitution leaves the original in place only where it can run here.

@pytest.fixture
def fake_original(tmp_path, monkeypatch):
    """An importable package `fake_cuda_only` (the original) and `fake_cuda_only_standin` (the substitute);
    sys.meta_path and sys.modules are put back afterwards."""
    for name, where in (("fake_cuda_only", "original"), ("fake_cuda_only_standin", "substitute")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHERE = {where!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    yield lambda condition: {"name": "fake", "replace": "fake_cuda_only", "with": "fake_cuda_only_standin",
                             "when": "import", "reason": "test", "keep_original_if": condition}
    for name in [m for m in sys.modules if m.startswith("fake_cuda_only")]:
        del sys.modules[name]


def served(sub) -> str:
    for name in [m for m in sys.modules if m.startswith("fake_cuda_only")]:
        del sys.modules[name]
    substitute.apply([sub], "import")
    return importlib.import_module("fake_cuda_only").WHERE


def test_importable_and_cuda_substitutes_an_importable_original_without_a_cuda_device(fake_original, monkeypatch):
    """What happens with PyPI's CUDA torch on a CPU machine: triton imports, but sam3's triton EDT cannot run."""
    monkeypatch.setattr(substitute, "_cuda_device", lambda: False)
    assert importlib.util.find_spec("fake_cuda_only") is not None
    assert served(fake_original("importable_and_cuda")) == "substitute"


def test_importable_and_cuda_keeps_the_original_with_a_cuda_device(fake_original, monkeypatch):
    monkeypatch.setattr(substitute, "_cuda_device", lambda: True)
    assert served(fake_original("importable_and_cuda")) == "original"


def test_importable_keeps_the_original_with_or_without_a_cuda_device(fake_original, monkeypatch):
    for cuda in (False, True):
        monkeypatch.setattr(substitute, "_cuda_device", lambda: cuda)
        assert served(fake_original("importable")) == "original"


def test_without_a_condition_the_original_is_always_replaced(fake_original, monkeypatch):
    monkeypatch.setattr(substitute, "_cuda_device", lambda: True)
    sub = fake_original(None)
    del sub["keep_original_if"]
    assert served(sub) == "substitute"


def test_an_original_that_does_not_import_is_replaced_even_with_a_cuda_device(fake_original, monkeypatch):
    monkeypatch.setattr(substitute, "_cuda_device", lambda: True)
    substitute.apply([{**fake_original("importable_and_cuda"), "replace": "fake_cuda_only_missing"}], "import")
    assert importlib.import_module("fake_cuda_only_missing").WHERE == "substitute"


def test_the_manifests_edt_rule_does_not_import_the_original_without_a_cuda_device(monkeypatch):
    """edt_pure_torch as the manifest declares it: no CUDA device, so triton and sam3's edt.py are not even
    tried; with a device and an importable original, the original stays."""
    subs = {s["name"]: s for s in manifest.load(ROOT / "manifests" / "sam3-image.yaml").data["substitutions"]}
    rule = subs["edt_pure_torch"]
    assert rule["keep_original_if"] == "importable_and_cuda"
    assert subs["torchvision_standin"]["keep_original_if"] == "importable"

    def no_import(module):
        raise AssertionError(f"imported {module}")

    monkeypatch.setattr(substitute, "_imports", no_import)
    monkeypatch.setattr(substitute, "_cuda_device", lambda: False)
    assert not substitute.keeps_original(rule)
    monkeypatch.setattr(substitute, "_imports", lambda module: module == "sam3.model.edt")
    monkeypatch.setattr(substitute, "_cuda_device", lambda: True)
    assert substitute.keeps_original(rule)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device: sam3's triton EDT may stay")
def test_sam3_edt_is_the_pure_torch_one_without_a_cuda_device():
    """conftest applies the import-phase substitutions: wherever triton imports or not, no device means
    sam3's tracker utilities call the pure-torch EDT."""
    from sam3.model import sam3_tracker_utils

    assert Path(sys.modules["sam3.model.edt"].__file__) == Path(edt.__file__)
    data = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(7)) < 0.8
    assert torch.equal(sam3_tracker_utils.edt_triton(data), reference_edt(data))


def test_schema_and_runtime_name_the_same_conditions():
    item = manifest.SCHEMA["properties"]["substitutions"]["items"]["properties"]
    assert tuple(item["keep_original_if"]["enum"]) == substitute.KEEP_ORIGINAL_IF
    assert "unless_importable" not in item
