"""Code that manifests name in `converters:`: TVM Relax converters for torch ops the frontend gets wrong.

Each is `fn(node: torch.fx.Node, importer) -> relax.Var`, passed to `from_exported_program` through
`custom_convert_map` (keyed by op overload name, e.g. "cat.default").
"""


def convert_as(op: str, node, importer):
    """`node` converted as `op` is: by the frontend's converter, or by the manifest's where it names one for `op`
    (the frontend calls those with the importer too)."""
    fn = importer.convert_map[op]
    if getattr(fn, "__module__", "").startswith(__name__ + "."):
        return fn(node, importer)
    return fn(node)
