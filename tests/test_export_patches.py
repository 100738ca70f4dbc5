"""Export patches (sam3spec/substitutes/*): each keeps eager numbers, and the patched components export.

Tiny variant (manifests/sam3-image-tiny.yaml: S = 336, F = 24, 2 ViT blocks, 2 decoder layers), built by
the pipeline's own code (tests/conftest.py), random weights, CPU, fp32.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import types

import pytest
import torch

from sam3spec.runtime.resolve import resolve, setattr_dotted

ROPE = ("sam3.model.vitdet:Attention._apply_rope", "sam3spec.substitutes.rope_real:apply_rope")
POSENC = (
    "sam3.model.position_encoding:PositionEmbeddingSine._encode_xy",
    "sam3spec.substitutes.posenc_shape_len:encode_xy",
)
RPB = (
    "sam3.model.decoder:TransformerDecoder._get_rpb_matrix",
    "sam3spec.substitutes.decoder_static_feat_size:get_rpb_matrix",
)
FFN = (
    "sam3.model.decoder:TransformerDecoderLayer.forward_ffn",
    "sam3spec.substitutes.decoder_ffn_no_autocast:forward_ffn",
)
PIN = ("torch:Tensor.pin_memory", "sam3spec.substitutes.pin_memory_cpu:pin_memory")


_INHERITED = object()


def _owner_and_name(target: str):
    module, _, attr = target.partition(":")
    owner_path, _, name = attr.rpartition(".")
    return resolve(f"{module}:{owner_path}" if owner_path else module), name


@contextlib.contextmanager
def patched(*pairs):
    """Install replacements as the pipeline does (setattr on the target), restore the originals after."""
    saved = []
    try:
        for target, repl in pairs:
            owner, name = _owner_and_name(target)
            saved.append((owner, name, owner.__dict__.get(name, _INHERITED)))
            setattr_dotted(target, resolve(repl))
        yield
    finally:
        for owner, name, value in reversed(saved):
            if value is _INHERITED:  # e.g. Tensor.pin_memory lives on torch._C.TensorBase
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def _maxdiff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        return max(_maxdiff(x, y) for x, y in zip(a, b))
    assert a.shape == b.shape and a.dtype == b.dtype
    if not a.is_floating_point():
        return float((a != b).sum())
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def A():
    return importlib.import_module("sam3spec.adapters.sam3_image")


def _export(adapter, args, dynamic_shapes=None):
    with torch.no_grad():
        return torch.export.export(adapter, args, strict=False, dynamic_shapes=dynamic_shapes)


# ---------------------------------------------------------------------------------------------- rope_real


def test_rope_real_rotation_is_bit_identical():
    from sam3.model.vitdet import apply_rotary_enc, compute_axial_cis
    from sam3spec.substitutes.rope_real import _rotate

    g = torch.Generator().manual_seed(0)
    cis = compute_axial_cis(dim=64, end_x=24, end_y=24, scale_pos=0.5)
    q, k = torch.randn(2, 16, 576, 64, generator=g), torch.randn(2, 16, 576, 64, generator=g)
    q_ref, k_ref = apply_rotary_enc(q, k, freqs_cis=cis)
    assert torch.equal(_rotate(q, cis.real, cis.imag), q_ref)
    assert torch.equal(_rotate(k, cis.real, cis.imag), k_ref)


def test_rope_real_trunk_matches_and_has_no_complex(model, A, tiny_inputs):
    from sam3spec.substitutes import rope_real

    trunk = A.vit_trunk(model)
    image = tiny_inputs("vit_trunk", seed=1)
    with torch.no_grad():
        ref = trunk(*image)
    # the patch converts module state: work on a copy of the trunk, keep the shared model as built
    twin_trunk = copy.deepcopy(model.backbone.vision_backbone.trunk)
    rope_real.prepare(twin_trunk)
    assert not any(b.is_complex() for b in twin_trunk.buffers())
    twin = types.SimpleNamespace(training=False, backbone=types.SimpleNamespace(
        vision_backbone=types.SimpleNamespace(trunk=twin_trunk)))
    with patched(ROPE):
        adapter = A.vit_trunk(twin)
        with torch.no_grad():
            out = adapter(*image)
        diff = _maxdiff(ref, out)
        assert diff == 0.0, f"trunk original vs real RoPE: max abs diff {diff}"
        ep = _export(adapter, image)
        graph_ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert not [o for o in graph_ops if "complex" in o], graph_ops
        assert not any(v.is_complex() for v in ep.state_dict.values())
        with torch.no_grad():
            assert _maxdiff(ep.module()(*image), out) == 0.0


# ---------------------------------------------------------------------------------------- pin_memory_cpu


def test_pin_memory_cpu():
    from sam3spec.substitutes.pin_memory_cpu import _ORIGINAL, _no_accelerator

    t = torch.tensor([24.0, 24.0, 24.0, 24.0])
    if _no_accelerator():
        with pytest.raises(RuntimeError):
            _ORIGINAL(t)
    with patched(PIN):
        pinned = t.pin_memory()
    assert torch.equal(pinned, t)


# ------------------------------------------------------------------------------------- posenc_shape_len


def test_posenc_shape_len_same_numbers(model):
    from sam3.model.position_encoding import PositionEmbeddingSine

    pe = model.geometry_encoder.pos_enc
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(7, generator=g), torch.rand(7, generator=g)
    ref = PositionEmbeddingSine._encode_xy(pe, x, y)
    with patched(POSENC):
        out = pe._encode_xy(x, y)
    assert torch.equal(ref[0], out[0]) and torch.equal(ref[1], out[1])


def test_geometry_encoder_patched_equals_original_and_exports_dynamic(model, A, tiny_inputs, tiny_dynamic):
    adapter = A.geometry_encoder(model)
    sizes = [dict(boxes=2, points=3), dict(boxes=1, points=1), dict(boxes=5, points=2)]
    inputs = [tiny_inputs("geometry_encoder", d, seed=3 + i) for i, d in enumerate(sizes)]
    with patched(PIN), torch.no_grad():  # boxes need pin_memory_cpu on a CPU-only machine
        refs = [adapter(*x) for x in inputs]
    with patched(PIN, POSENC):
        with torch.no_grad():
            outs = [adapter(*x) for x in inputs]
        for ref, out in zip(refs, outs):
            assert _maxdiff(ref, out) == 0.0
        ep = _export(adapter, inputs[0], tiny_dynamic("geometry_encoder"))
        with torch.no_grad():
            for d, x, out in zip(sizes, inputs, outs):
                got = ep.module()(*x)
                assert got[0].shape[0] == 32 + d["boxes"] + d["points"] + 1
                assert _maxdiff(got, out) == 0.0, d


def test_geometry_encoder_without_posenc_patch_pins_counts(model, A, tiny_inputs, tiny_dynamic):
    adapter = A.geometry_encoder(model)
    x = tiny_inputs("geometry_encoder", seed=6)
    with patched(PIN), pytest.raises(Exception, match="Constraints violated|specializ"):
        _export(adapter, x, tiny_dynamic("geometry_encoder"))


# ------------------------------------------------------------------- decoder_static_feat_size, ffn


def test_decoder_patches_equal_original_and_export_dynamic(model, A, tiny_inputs, tiny_dynamic):
    adapter = A.decoder(model)
    sizes = [dict(prompt_len=38), dict(prompt_len=35), dict(prompt_len=43)]
    inputs = [tiny_inputs("decoder", d, seed=10 + i) for i, d in enumerate(sizes)]
    with torch.no_grad():
        refs = [adapter(*x) for x in inputs]
    with patched(RPB, FFN):
        with torch.no_grad():
            outs = [adapter(*x) for x in inputs]
        for ref, out in zip(refs, outs):
            assert _maxdiff(ref, out) == 0.0
        ep = _export(adapter, inputs[0], tiny_dynamic("decoder"))
        graph_ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert not [o for o in graph_ops if "wrap_with" in o], graph_ops
        with torch.no_grad():
            for d, x, out in zip(sizes, inputs, outs):
                assert _maxdiff(ep.module()(*x), out) == 0.0, d


def test_decoder_without_static_feat_size_does_not_export(model, A, tiny_inputs, tiny_dynamic):
    adapter = A.decoder(model)
    x = tiny_inputs("decoder", seed=13)
    with patched(FFN), pytest.raises(Exception, match="data-dependent|GuardOnDataDependent"):
        _export(adapter, x, tiny_dynamic("decoder"))


def test_decoder_static_feat_size_checks_eager_size(model):
    from sam3spec.substitutes.decoder_static_feat_size import get_rpb_matrix

    dec = model.transformer.decoder
    boxes = torch.rand(200, 1, 4) * 0.5 + 0.25
    ref = dec._get_rpb_matrix(boxes, (24, 24))
    out = get_rpb_matrix(dec, boxes, (torch.tensor(24), torch.tensor(24)))
    assert torch.equal(ref, out)
    with pytest.raises(AssertionError):
        get_rpb_matrix(dec, boxes, (torch.tensor(23), torch.tensor(24)))


def test_ffn_without_autocast_context(model):
    from sam3spec.substitutes.decoder_ffn_no_autocast import forward_ffn

    layer = model.transformer.decoder.layers[0]
    x = torch.randn(201, 1, 256, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(layer.forward_ffn(x), forward_ffn(layer, x))
