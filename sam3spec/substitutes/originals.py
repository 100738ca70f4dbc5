"""Each stand-in measured against the NVIDIA-side code it replaces, where that code runs (torchvision's roi_align
CPU and CUDA kernels, sam3's triton EDT, vitdet's complex RoPE): `python -m sam3spec.substitutes.originals
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


CHECKS = {"roi_align": roi_align_rows, "edt": edt_rows, "rope": rope_rows}


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
