"""Relax's fused attention fails to legalize when sequence lengths are symbolic sums (SAM's `n + 6` tokens:
"shapes of x and y are inconsistent"); spelled out as matmul → softmax → matmul it imports and schedules."""

import math

from tvm import relax


def sdpa_matmul(node, importer):
    args = importer.retrieve_args(node)
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else node.kwargs.get("attn_mask")
    dropout = args[4] if len(args) > 4 else node.kwargs.get("dropout_p", 0.0)
    causal = args[5] if len(args) > 5 else node.kwargs.get("is_causal", False)
    scale = node.kwargs.get("scale", args[6] if len(args) > 6 else None)
    if causal or dropout:
        raise NotImplementedError("sdpa_matmul: is_causal and dropout_p > 0 are not supported")
    bb = importer.block_builder
    rank = len(importer.shape_of(k))
    head_dim = importer.shape_of(q)[-1]
    scale = scale if scale is not None else 1.0 / math.sqrt(int(head_dim))
    kt = bb.emit(relax.op.permute_dims(k, list(range(rank - 2)) + [rank - 1, rank - 2]))
    scores = bb.emit(relax.op.multiply(relax.op.matmul(q, kt), relax.const(scale, q.ty.dtype)))
    if mask is not None:
        if mask.ty.dtype == "bool":
            scores = bb.emit(relax.op.where(mask, scores, relax.const(float("-inf"), q.ty.dtype)))
        else:
            scores = bb.emit(relax.op.add(scores, mask))
    probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
    return bb.emit(relax.op.matmul(probs, v))
