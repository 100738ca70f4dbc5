"""What a compiled library's GPU kernel source says: how many kernels there are, how many use the matrix
units (CUDA wmma, Metal simdgroup matrices), and whether Metal Shading Language stays within Metal's limits
(a static check: Metal code cannot run without a Mac)."""

from __future__ import annotations

import re

# A kernel's first line, by source language (TVM's CUDA and Metal codegen).
_KERNEL = {"cuda": re.compile(r'^extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', re.M),
           "metal": re.compile(r"^kernel void (\w+)\(", re.M)}
# The call that puts a kernel's matrix products on the matrix units.
MATRIX_UNIT = {"cuda": "nvcuda::wmma::mma_sync", "metal": "simdgroup_multiply_accumulate"}

# Apple GPUs (Metal feature set tables, Apple7+ / M1 and later): buffer arguments per kernel, threadgroup memory
# per threadgroup, threads per threadgroup.
METAL_LIMITS = {"buffers": 31, "threadgroup_bytes": 32768, "threads": 1024}
_BYTES = {"half": 2, "bfloat": 2, "float": 4, "int": 4, "uint": 4, "short": 2, "ushort": 2, "char": 1,
          "uchar": 1, "bool": 1, "long": 8, "ulong": 8}
_THREADGROUP_ARRAY = re.compile(r"^\s*threadgroup (\w+?)(\d*) (\w+)\[(\d+)\];", re.M)


def split(language: str, source: str) -> dict[str, str]:
    """Kernel name -> its source (from its first line to the next kernel's)."""
    starts = list(_KERNEL[language].finditer(source))
    return {m.group(1): source[m.start():(starts[i + 1].start() if i + 1 < len(starts) else len(source))]
            for i, m in enumerate(starts)}


def count(language: str, source: str) -> dict:
    """{"kernels": n, "matrix_unit": kernels that call MATRIX_UNIT, "instruction": MATRIX_UNIT}."""
    kernels = split(language, source)
    return {"kernels": len(kernels), "matrix_unit": sum(MATRIX_UNIT[language] in k for k in kernels.values()),
            "instruction": MATRIX_UNIT[language]}


def metal_check(source: str, threads: dict[str, int]) -> dict:
    """Each kernel against METAL_LIMITS: its `[[ buffer(n) ]]` arguments, its threadgroup arrays' bytes, its
    threads per threadgroup (`threads`: kernel or function name -> the product of its threadIdx extents, from
    the scheduled TIR; a kernel ``f_kernel`` takes ``f``'s), and no ``double`` anywhere (Metal has none).
    Returns {"ok", "kernels", "limits", "largest": {buffers, threadgroup_bytes, threads}, "problems": [...]}."""
    problems, largest = [], dict.fromkeys(METAL_LIMITS, 0)
    if re.search(r"\bdouble\b", source):
        problems.append("the source uses double, which Metal does not have")
    kernels = split("metal", source)
    launch = {name: threads.get(name, threads.get(re.sub(r"_kernel(_\d+)?$", "", name), 0)) for name in kernels}
    for name, text in kernels.items():
        header = text[:text.index(") {")] if ") {" in text else text
        used = {"buffers": len(re.findall(r"\[\[ ?buffer\(\d+\) ?\]\]", header)),
                "threadgroup_bytes": sum(_BYTES.get(t, 4) * int(lanes or 1) * int(n)
                                         for t, lanes, _, n in _THREADGROUP_ARRAY.findall(text)),
                "threads": launch[name]}
        for what, value in used.items():
            largest[what] = max(largest[what], value)
            if value > METAL_LIMITS[what]:
                problems.append(f"{name}: {what} {value} > {METAL_LIMITS[what]}")
    unknown = [n for n in kernels if not launch[n]]
    if unknown:
        problems.append(f"threads per threadgroup unknown for {len(unknown)} kernel(s): {', '.join(unknown[:5])}")
    return {"ok": not problems, "kernels": len(kernels), "limits": METAL_LIMITS, "largest": largest,
            "problems": problems}
