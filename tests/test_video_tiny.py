"""SAM3's video model (reduced): the tracker's memory networks through the real pipeline, the view that lets the
image adapters run on the video model, and the tracker's RoPE substitute against SAM3's complex original."""

import json
from pathlib import Path

import pytest
import torch
from conftest import port_command

from sam3spec import manifest, plan as plan_lib
from sam3spec.runtime import model as model_lib, reference as reference_lib

ROOT = Path(__file__).resolve().parents[1]
TRACKER = ["memory_attention", "memory_encoder", "tracker_mask_decoder"]


@pytest.fixture(scope="module")
def video_port():
    """The tracker's components and one image component (through the view) of sam3-video-tiny, on cpu."""
    result = port_command("manifests/sam3-video-tiny.yaml", "--target", "cpu", *[a for c in TRACKER for a in ("-c", c)],
                          "-c", "sam_prompt_encoder")
    report = json.loads((ROOT / "build" / "sam3-video-tiny" / "cpu" / "report.json").read_text())
    return result, report


@pytest.fixture(scope="module")
def video_model():
    plan = plan_lib.make(manifest.load(ROOT / "manifests" / "sam3-video-tiny.yaml"), ROOT)
    return plan, model_lib.build_substituted(plan.model, ROOT / "manifests")


def test_tracker_components_verified(video_port):
    result, report = video_port
    comps = {c["name"]: c for c in report["components"]}
    assert {n: c["status"] for n, c in comps.items()} == dict.fromkeys(TRACKER + ["sam_prompt_encoder"], "verified"), \
        result.stdout[-3000:] + result.stderr[-3000:]
    for comp in comps.values():
        # the exported program (rope_attention_real in place of the complex RoPE) equals SAM3's own code
        assert comp["export"]["exported_vs_original_max_abs"] == 0.0, comp["name"]
        for out in comp["outputs"]:
            assert out["ok"] and out["max_abs"] <= out["atol"], (comp["name"], out)


def test_memory_bank_sizes_checked_at_two_sizes(video_port):
    """Memory frames, pointer tokens and objects are dynamic: the reference holds two cases of other shapes."""
    for name in TRACKER:
        reference = reference_lib.load(ROOT / "build" / "sam3-video-tiny" / "cpu" / name / reference_lib.FILE)
        shapes = [tuple(tuple(t.shape) for t in case["inputs"]) for case in reference["cases"]]
        assert len(shapes) == 2 and shapes[0] != shapes[1], name


def test_the_view_shares_the_video_models_modules_and_changes_nothing(video_model):
    plan, net = video_model
    keys = list(net.state_dict())
    view = model_lib.adapter_root(plan.model, net)
    assert list(net.state_dict()) == keys and net.detector.inst_interactive_predictor is None
    assert view.inst_interactive_predictor.model is net.tracker
    assert view.backbone is net.detector.backbone and view.transformer is net.detector.transformer
    tracker_params = {id(p) for p in net.tracker.parameters()}
    assert {id(p) for p in view.inst_interactive_predictor.parameters()} == tracker_params


def test_rope_substitute_equals_the_complex_original(video_model):
    """Cross-attention to 3 memory frames and 8 pointer tokens (which skip RoPE), and self-attention: the same
    numbers as RoPEAttention.forward's complex arithmetic."""
    from sam3.sam.transformer import RoPEAttention

    from sam3spec.substitutes import rope_attention_real

    _, net = video_model
    layer = net.tracker.transformer.encoder.layers[0]
    rope_attention_real.prepare(layer)
    tokens = layer.self_attn.freqs_cis.shape[0]
    torch.manual_seed(0)
    q = torch.randn(2, tokens, 256)
    memory = torch.randn(2, 3 * tokens + 8, 64)
    with torch.no_grad():
        for attn, k, extra in ((layer.cross_attn_image, memory, 8), (layer.self_attn, q, 0)):
            kwargs = {"num_k_exclude_rope": extra} if extra else {}
            want = RoPEAttention.forward(attn, q, k, k.clone(), **kwargs)
            got = rope_attention_real.forward(attn, q, k, k.clone(), **kwargs)
            assert torch.equal(got, want)
