"""Named compile pipelines that manifests' targets name: `module:pipeline(target, dynamic_shapes) -> Pass`."""
