"""Code that manifests name in `converters:`: TVM Relax converters for torch ops the frontend gets wrong.

Each is `fn(node: torch.fx.Node, importer) -> relax.Var`, passed to `from_exported_program` through
`custom_convert_map` (keyed by op overload name, e.g. "cat.default").
"""
