"""Code that manifests name as a component's `adapter`: `fn(model) -> nn.Module` with plain tensor I/O."""
