"""Named compile pipelines that manifests' targets name: `module:pipeline(target, dynamic_shapes) -> Pass`."""


def dataflow_lower_passes(backend, target, dynamic_shapes: bool) -> list:
    """`backend`'s (a tvm.relax.backend.*.pipeline module) dataflow lowering passes. With dynamic shapes,
    without RewriteDataflowReshape: it fails on symbolic reshapes ("padding factor ... is not divisible")."""
    return [p for p in backend.dataflow_lower_passes(target)
            if not (dynamic_shapes and p.info.name == "RewriteDataflowReshape")]
