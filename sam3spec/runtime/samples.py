"""Example inputs from the manifest's declarations (shape, dtype, sample), reproducible from a seed."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32,
          "bool": torch.bool}


def _count(low: int, high: int, generator: torch.Generator) -> int:
    """A whole number in [low, high] (high when the range is empty)."""
    return int(torch.randint(low, high + 1, (), generator=generator)) if high > low else high


def padding(shape: list[int], generator: torch.Generator, low: int = 1, high: int | None = None) -> torch.Tensor:
    """A right-padded mask as SAM3 builds one (True = padding): along the last axis the first k entries are
    valid, the rest padding, k in [low, high] within [1, n - 1] (at least one of each when n >= 2)."""
    n = shape[-1]
    top = max(1, min(n - 1, n if high is None else high))
    mask = torch.zeros(shape, dtype=torch.bool)
    for row in mask.view(-1, n) if n else []:
        row[_count(max(1, min(low, top)), top, generator):] = True
    return mask


def prompt_padding(shape: list[int], generator: torch.Generator, text: int) -> torch.Tensor:
    """SAM3's prompt mask (text, then points, boxes and the class token): the `text` entries right-padded,
    then the geometry entries, some of them padding, the last (the class token) never."""
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[..., :text] = padding(shape[:-1] + [text], generator, 2, text // 2)  # start, a few words, end
    geometry = shape[-1] - text
    if geometry > 1:
        mask[..., text:-1] = torch.rand(shape[:-1] + [geometry - 1], generator=generator) < 0.5
    return mask


def tokens(shape: list[int], generator: torch.Generator, low: int, high: int) -> torch.Tensor:
    """Token ids as SAM3's tokenizer pads them: start (high - 2), k words in [low, high - 2), end (high - 1,
    the largest id, where the encoder pools), then zeros; k in [1, n - 2]."""
    n = shape[-1]
    out = torch.zeros(shape, dtype=torch.int64)
    for row in out.view(-1, n):
        k = _count(1, n - 2, generator)
        row[0], row[k + 1] = high - 2, high - 1
        row[1:k + 1] = torch.randint(low, high - 2, (k,), generator=generator)
    return out


def make(spec: dict, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    dtype, sample = DTYPES[spec["dtype"]], spec.get("sample", {"kind": "normal"})
    kind = sample["kind"]
    if kind == "padding":
        high = sample.get("high")
        return padding(shape, generator, int(sample.get("low", 1)), None if high is None else int(high)).to(dtype)
    if kind == "prompt_padding":
        return prompt_padding(shape, generator, int(sample["text"])).to(dtype)
    if kind == "tokens":
        return tokens(shape, generator, int(sample.get("low", 1)), int(sample["high"])).to(dtype)
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
