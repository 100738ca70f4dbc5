"""Code that manifests name in `substitutions:`: plain-PyTorch stand-ins for untraceable or NVIDIA-only code.

Each module replaces one thing and says why in its docstring's first line. How a manifest applies them
(attribute patch, whole-module alias, optional `prepare(root)`) is in sam3spec/runtime/substitute.py.
"""
