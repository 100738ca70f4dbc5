"""What generated scripts call: build the model, export a component, compile it with TVM, verify it.

Lower layer: imports nothing from the interpreter (manifest, plan, render, cli, report).
"""
