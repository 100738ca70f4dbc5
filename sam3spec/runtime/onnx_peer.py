"""ONNX Runtime as bench's CPU peer: what users without PyTorch run today (samexporter exports SAM3 to ONNX). The
component's exported program, the same substituted module TVM compiles, goes through torch.onnx (dynamo) once per
program; ONNX Runtime's CPU provider runs it on the same inputs with the same thread count. onnxruntime, onnx and
onnxscript come with the bench session only: without them the column says so."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sam3spec.runtime.artifacts import checked, progress, recorded

MODULES = ("onnxruntime", "onnx", "onnxscript")
DIR = "onnx"  # under the component's build folder: model.onnx, its external data, source.json


def missing() -> str | None:
    """Why the peer cannot run here (a module not installed), or None."""
    import importlib.util

    absent = [m for m in MODULES if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(absent)} (nox -s bench installs them)" if absent else None


def exported(component_dir: Path, args) -> Path:
    """The ONNX model of the component's program.pt2, exported once per program (its sha256 in source.json);
    written to a temporary folder first, so an interrupted export leaves nothing half-written."""
    import torch

    program = checked(component_dir, "program.pt2")
    sha = (recorded(component_dir, "program.pt2")[0] or {}).get("sha256")
    target = component_dir / DIR
    source = target / "source.json"
    if source.is_file() and json.loads(source.read_text()).get("program_sha256") == sha:
        return target / "model.onnx"
    progress(f"{component_dir.name}: exporting program.pt2 to ONNX (torch.onnx, dynamo)")
    tmp = Path(tempfile.mkdtemp(dir=component_dir, prefix=f".{DIR}."))
    try:
        torch.onnx.export(torch.export.load(program), tuple(args), str(tmp / "model.onnx"), dynamo=True,
                          external_data=True)
        (tmp / "source.json").write_text(json.dumps({"program_sha256": sha}))
        shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "model.onnx"


def session(path: Path, args, threads: int):
    """(call, outputs): a function running the model once on `args`, and its outputs of one run (numpy)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return (lambda: sess.run(None, feeds)), sess.run(None, feeds)


def max_abs(outputs, reference) -> float:
    """Largest absolute difference between ONNX Runtime's outputs and PyTorch's (flattened in order)."""
    import numpy as np
    import torch

    leaves = [t for t in torch.utils._pytree.tree_leaves(reference) if isinstance(t, torch.Tensor)]
    if len(leaves) != len(outputs):
        raise ValueError(f"ONNX Runtime gave {len(outputs)} outputs, PyTorch {len(leaves)}")
    return max((float(np.max(np.abs(o.astype(np.float64) - t.detach().double().numpy()))) if o.size else 0.0)
               for o, t in zip(outputs, leaves))
