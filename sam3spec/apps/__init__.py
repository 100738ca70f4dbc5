"""End-to-end applications that a manifest's `predict.app` names: a package's own pre- and post-processing
driven by compiled components. Each module offers `compiled(run, sizes, bpe_path)` (the package's model with
its networks on `run(component, *tensors)`), `predict(model, image, prompt, threshold) -> Detections` (on
that or on the package's own model), `components(prompt)` and `check(prompt, dims)` (see sam3_image.py)."""
