"""End-to-end applications that a manifest's `predict.app` names: a package's own pre- and post-processing
driven by compiled components. Each module offers `compiled(run, sizes, model)`, `prepare(model)` and
`predict(model, image, prompt, threshold) -> Detections` (see sam3_image.py)."""
