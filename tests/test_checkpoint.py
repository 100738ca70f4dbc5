"""A checkpoint named by the environment (or the manifest) is loaded into the built modules."""

import pytest
import torch

from sam3spec.runtime import model as model_lib

from conftest import ROOT


def test_checkpoint_from_environment_is_loaded(tiny_plan, tiny_model, tmp_path, monkeypatch):
    name = "transformer.decoder.layers.0.norm1.weight"
    tracker = "sam_mask_decoder.iou_token.weight"
    # SAM3's release format: detector.* and tracker.* keys under "model" (sam3.model_builder._load_checkpoint)
    state = {f"detector.{name}": torch.full_like(tiny_model.state_dict()[name], 0.25),
             f"tracker.{tracker}": torch.full_like(
                 tiny_model.state_dict()[f"inst_interactive_predictor.model.{tracker}"], -2.0)}
    torch.save({"model": state}, tmp_path / "sam3.pt")
    monkeypatch.setenv(tiny_plan.model["weights"]["checkpoint_env"], str(tmp_path / "sam3.pt"))
    net = model_lib.build(tiny_plan.model, ROOT / "manifests")
    loaded = net.state_dict()
    assert torch.equal(loaded[name], state[f"detector.{name}"])
    assert torch.equal(loaded[f"inst_interactive_predictor.model.{tracker}"], state[f"tracker.{tracker}"])
    assert not torch.equal(tiny_model.state_dict()[name], loaded[name])  # it was not that before


def test_missing_checkpoint_is_an_error(tiny_plan, tmp_path, monkeypatch):
    monkeypatch.setenv(tiny_plan.model["weights"]["checkpoint_env"], str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        model_lib.checkpoint_path(tiny_plan.model["weights"], ROOT / "manifests")


def test_manifest_checkpoint_is_relative_to_the_manifest(tiny_plan, tmp_path, monkeypatch):
    monkeypatch.delenv(tiny_plan.model["weights"]["checkpoint_env"], raising=False)
    (tmp_path / "ckpt.pt").write_bytes(b"")
    weights = dict(tiny_plan.model["weights"], checkpoint="ckpt.pt")
    assert model_lib.checkpoint_path(weights, tmp_path) == tmp_path / "ckpt.pt"
    assert model_lib.checkpoint_path(dict(weights, checkpoint=None), tmp_path) is None
