"""Shared fixtures: the tiny manifest's plan, and its model built by the pipeline's own code."""

from pathlib import Path

import pytest

from sam3spec import manifest, plan as plan_lib
from sam3spec.runtime import export, model as model_lib, samples, substitute

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_plan():
    return plan_lib.make(manifest.load(ROOT / "manifests" / "sam3-image-tiny.yaml"), ROOT)


@pytest.fixture(scope="session", autouse=True)
def sam3_importable(tiny_plan):
    """sam3 imports torchvision and triton at module level: the manifest's import-phase substitutions."""
    substitute.apply(tiny_plan.model["substitutions"], "import")


@pytest.fixture(scope="session")
def tiny_model(tiny_plan):
    """The reduced SAM3, built as export.py builds it (import- and build-phase substitutions applied)."""
    return model_lib.build_substituted(tiny_plan.model, ROOT / "manifests")


@pytest.fixture(scope="session")
def tiny_inputs(tiny_plan):
    """tiny_inputs(component, dims=None, seed=0): sampled inputs as the manifest declares them."""

    def make(component, dims=None, seed=0):
        comp = tiny_plan.component(component)
        values = {name: d["example"] for name, d in comp.dims.items()}
        values.update(dims or {})
        return tuple(samples.make_all(comp.inputs, values, seed))

    return make


@pytest.fixture(scope="session")
def tiny_dynamic(tiny_plan):
    """tiny_dynamic(component): torch.export dynamic_shapes for the component's manifest dims."""
    return lambda component: export.dynamic_shapes(tiny_plan.component(component).inputs,
                                                   tiny_plan.component(component).dims)
