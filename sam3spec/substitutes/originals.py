"""Each stand-in measured against the NVIDIA-side code it replaces, where that code runs (torchvision's roi_align
CPU and CUDA kernels, sam3's triton EDT, vitdet's complex RoPE, the video model's frame loading, detector step
and connected components): `python -m sam3spec.substitutes.originals
[--out FILE.md]` on a CUDA machine with torchvision and triton; tests/test_substitutes_vs_originals.py asserts
the same rows. A row whose original cannot run here is left out, with the reason in `skipped`."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _row(substitute: str, original: str, device: str, case: str, got: torch.Tensor, want: torch.Tensor) -> dict:
    diff = (got.double() - want.double()).abs()
    return {"substitute": substitute, "original": original, "device": device, "case": case,
            "dtype": str(want.dtype).removeprefix("torch."), "max_abs": diff.max().item() if diff.numel() else 0.0,
            "max_ref": want.double().abs().max().item() if want.numel() else 0.0,
            "identical": bool(torch.equal(got, want))}


def roi_align_rows() -> list[dict]:
    """sam3spec.substitutes.roi_align against torchvision.ops.roi_align, as geometry_encoders.py:662 calls it
    (7x7, aligned=False, sampling_ratio=-1) and with the other settings, on every device here."""
    import torchvision.ops

    from sam3spec.substitutes.roi_align import roi_align

    if "sam3spec" in (getattr(torchvision, "__file__", None) or "sam3spec"):
        raise RuntimeError("torchvision here is sam3spec's stand-in: the real one does not import")

    rows = []
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 256, 72, 72, generator=g, dtype=torch.float64)
    xy = torch.rand(40, 2, generator=g) * 86 - 7           # some start outside the 72x72 map
    wh = torch.rand(40, 2, generator=g) * 58 + 0.05
    boxes = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), xy, xy + wh], 1).double()
    for device in _devices():
        for dtype in (torch.float32, torch.float64):
            for aligned, ratio in ((False, -1), (True, -1), (False, 2)):
                f, b = feats.to(device, dtype), boxes.to(device, dtype)
                case = f"72x72x256, 40 boxes, aligned={aligned}, sampling_ratio={ratio}"
                rows.append(_row("roi_align (einsum)", f"torchvision.ops.roi_align ({device} kernel)", device, case,
                                 roi_align(f, b, 7, 1.0, ratio, aligned),
                                 torchvision.ops.roi_align(f, b, 7, 1.0, ratio, aligned)))
    return rows


def _sam3_edt():
    """sam3/model/edt.py itself (the triton kernels), loaded from the installed sam3 wheel."""
    path = Path(importlib.util.find_spec("sam3").origin).parent / "model" / "edt.py"
    spec = importlib.util.spec_from_file_location("sam3_edt_original", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def edt_rows() -> list[dict]:
    """sam3spec.substitutes.edt against sam3's triton edt_triton (CUDA only), at SAM3's mask sizes."""
    from sam3spec.substitutes.edt import edt_triton

    original = _sam3_edt()
    rows = []
    g = torch.Generator().manual_seed(2)
    for shape, density in (((3, 64, 80), 0.7), ((2, 288, 288), 0.97), ((1, 1008, 1008), 0.999), ((1, 32, 32), 1.0)):
        data = (torch.rand(shape, generator=g) < density).cuda()
        rows.append(_row("edt (pure torch)", "sam3.model.edt.edt_triton (triton)", "cuda",
                         f"{'x'.join(map(str, shape))}, {density:.1%} foreground", edt_triton(data),
                         original.edt_triton(data)))
    return rows


def rope_rows() -> list[dict]:
    """sam3spec.substitutes.rope_real against vitdet's complex apply_rotary_enc, with the real freqs_cis of the
    windowed (24x24) and global (72x72) blocks of the full-size trunk, on every device here."""
    from sam3.model.vitdet import apply_rotary_enc, compute_axial_cis

    from sam3spec.substitutes.rope_real import _rotate

    rows = []
    g = torch.Generator().manual_seed(3)
    for side, batch in ((24, 9), (72, 1)):
        cis = compute_axial_cis(dim=64, end_x=side, end_y=side, theta=10000.0)
        q = torch.randn(batch, 16, side * side, 64, generator=g)
        k = torch.randn(batch, 16, side * side, 64, generator=g)
        for device in _devices():
            want_q, want_k = apply_rotary_enc(q.to(device), k.to(device), cis.to(device))
            cos, sin = cis.real.contiguous().to(device), cis.imag.contiguous().to(device)
            for name, got, want in (("q", _rotate(q.to(device), cos, sin), want_q),
                                    ("k", _rotate(k.to(device), cos, sin), want_k)):
                rows.append(_row("RoPE (real cos/sin)", "vitdet.apply_rotary_enc (complex64)", device,
                                 f"{name} [{batch},16,{side * side},64], {side}x{side} positions", got, want))
    return rows


def frame_rows() -> list[dict]:
    """video_frames.load_image against io_utils._load_img_as_tensor (torchvision's resize and to_tensor), on
    frames of several sizes and formats, resized to SAM3's 1008."""
    import tempfile

    import numpy as np
    import torchvision
    from PIL import Image
    from sam3.model import io_utils

    from sam3spec.substitutes.video_frames import load_image

    if "sam3spec" in (getattr(torchvision, "__file__", None) or "sam3spec"):
        raise RuntimeError("torchvision here is sam3spec's stand-in: the real one does not import")
    original = io_utils._load_img_as_tensor
    if original.__module__ != "sam3.model.io_utils":
        raise RuntimeError("io_utils._load_img_as_tensor is substituted in this process")
    rows = []
    rng = np.random.default_rng(4)
    with tempfile.TemporaryDirectory() as folder:
        for (width, height), fmt in (((451, 300), "png"), ((640, 360), "jpg"), ((200, 500), "png")):
            path = Path(folder) / f"frame.{fmt}"
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
            got, want = load_image(path, 1008), original(path, 1008)
            if got[1:] != want[1:]:
                raise AssertionError(f"sizes differ: {got[1:]} vs {want[1:]}")
            rows.append(_row("load_image (PIL bilinear)", "io_utils._load_img_as_tensor (torchvision)", "cpu",
                             f"{width}x{height} {fmt} -> 1008", got[0], want[0]))
    return rows


def detector_step_rows() -> list[dict]:
    """detector_one_device.build_buffer against Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk with
    world_size 1 (its gather is then the identity, no NCCL), on detector outputs made up for the purpose, NMS on:
    the detections identical, the tracker's features those the original casts to bfloat16."""
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU

    from sam3spec.substitutes.detector_one_device import build_buffer

    original = Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk
    if original is build_buffer:
        raise RuntimeError("the detector step is substituted in this process")
    g = torch.Generator().manual_seed(5)
    outputs = {"pred_logits": torch.randn(1, 20, 1, generator=g), "pred_boxes": torch.rand(1, 20, 4, generator=g),
               "pred_boxes_xyxy": torch.rand(1, 20, 4, generator=g), "pred_masks": torch.randn(1, 20, 36, 36, generator=g)}
    feats = {"backbone_fpn": [torch.randn(1, 32, 48, 48, generator=g), torch.randn(1, 64, 24, 24, generator=g),
                              torch.randn(1, 256, 12, 12, generator=g)], "vision_pos_enc": [torch.randn(1, 256, 12, 12)]}

    class OneDevice:
        rank, world_size, gather_backbone_out, async_all_gather = 0, 1, True, False
        _gather_tensor = Sam3ImageOnVideoMultiGPU._gather_tensor

        def forward_grounding(self, **kwargs):
            out = {k: v.clone() for k, v in outputs.items()}
            out["prev_encoder_out"] = {"backbone_out": {"sam2_backbone_out": feats}}
            return out

    rows = []
    buffers = []
    for fn in (build_buffer, original):
        buffer = {}
        fn(OneDevice(), backbone_out={}, find_inputs=[None], geometric_prompt=None, frame_idx_begin=0,
           frame_idx_end=1, num_frames=1, multigpu_buffer=buffer, run_nms=True, nms_prob_thresh=0.5,
           nms_iou_thresh=0.1)
        buffers.append(buffer[0])
    ours, theirs = buffers
    for key in theirs:
        got, want = ours[key][0], theirs[key][0]
        if isinstance(want, list):
            got, want = torch.stack(got), torch.stack(want)
        label = key
        if want.dtype == torch.bfloat16:  # the original's cast for NCCL: ours, cast the same way, must equal it
            got, label = got.to(torch.bfloat16), f"{key} (ours cast to bfloat16, as the original sends it)"
        rows.append(_row("detector_one_device.build_buffer", "_build_multigpu_buffer_next_chunk (world_size 1)",
                         "cpu", label, got, want))
    return rows


def connected_components_rows() -> list[dict]:
    """connected_components_empty against sam3's CPU connected components on a batch (where it delegates), and
    on an empty batch against the CUDA kernels (triton), which return empty tensors there."""
    from sam3.perflib import connected_components as cc

    from sam3spec.substitutes.connected_components_empty import _ORIGINAL, connected_components_cpu

    g = torch.Generator().manual_seed(6)
    masks = torch.rand(3, 1, 40, 50, generator=g) > 0.6
    rows = []
    for got, want, case in zip(connected_components_cpu(masks), _ORIGINAL(masks), ("labels", "counts")):
        rows.append(_row("connected_components_cpu (empty batch)", "connected_components_cpu", "cpu",
                         f"3x1x40x50 masks, {case}", got, want))
    if torch.cuda.is_available():
        empty = torch.zeros(0, 1, 40, 50, dtype=torch.bool)
        for got, want, case in zip(connected_components_cpu(empty), cc.connected_components(empty.cuda()),
                                   ("labels", "counts")):
            rows.append(_row("connected_components_cpu (empty batch)", "connected_components (CUDA kernels)", "cuda",
                             f"0x1x40x50 masks, {case}: shapes {tuple(got.shape)} / {tuple(want.shape)}",
                             got.to(want.dtype), want.cpu()))
    return rows


CHECKS = {"roi_align": roi_align_rows, "edt": edt_rows, "rope": rope_rows, "frames": frame_rows,
          "detector_step": detector_step_rows, "connected_components": connected_components_rows}


def run() -> tuple[list[dict], dict[str, str]]:
    """Every row that can be measured here, and why the others were not."""
    rows, skipped = [], {}
    for name, check in CHECKS.items():
        try:
            rows += check()
        except Exception as exc:  # noqa: BLE001 - an original that cannot run here (no torchvision, no GPU)
            skipped[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
    return rows, skipped


def markdown(rows: list[dict], skipped: dict[str, str]) -> str:
    lines = ["| substitute | original | device | case | dtype | max abs | max abs of original | identical |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['substitute']} | {r['original']} | {r['device']} | {r['case']} | {r['dtype']} | "
              f"{r['max_abs']:.3g} | {r['max_ref']:.3g} | {'yes' if r['identical'] else 'no'} |" for r in rows]
    lines += [f"\nNot measured: {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    rows, skipped = run()
    text = (f"torch {torch.__version__}"
            + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device") + "\n\n"
            + markdown(rows, skipped))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
