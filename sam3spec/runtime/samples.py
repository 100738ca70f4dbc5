"""Example inputs from the manifest's declarations (shape, dtype, sample), reproducible from a seed."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32,
          "bool": torch.bool}


def make(spec: dict, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    dtype, sample = DTYPES[spec["dtype"]], spec.get("sample", {"kind": "normal"})
    kind = sample["kind"]
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "ones":
        return torch.ones(shape, dtype=dtype)
    if kind == "randint":
        return torch.randint(int(sample.get("low", 0)), int(sample["high"]), shape, generator=generator).to(dtype)
    if kind == "uniform":
        low, high = sample.get("low", 0.0), sample.get("high", 1.0)
        return (torch.rand(shape, generator=generator) * (high - low) + low).to(dtype)
    if kind == "boxes_cxcywh":  # centre in (0.2, 0.8), size in (0.05, 0.4): boxes inside the image
        centre = torch.rand(shape[:-1] + [2], generator=generator) * 0.6 + 0.2
        size = torch.rand(shape[:-1] + [2], generator=generator) * 0.35 + 0.05
        return torch.cat([centre, size], -1).to(dtype)
    return (torch.randn(shape, generator=generator) * sample.get("std", 1.0)).to(dtype)


def make_all(inputs: list[dict], dims: dict[str, int], seed: int) -> list[torch.Tensor]:
    """One tensor per input; named dims in shapes take the values in `dims`."""
    generator = torch.Generator().manual_seed(seed)
    return [make(spec, [dims.get(s, s) if isinstance(s, str) else s for s in spec["shape"]], generator)
            for spec in inputs]
