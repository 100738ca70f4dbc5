"""Shared fixtures: the tiny manifest's plan, its model built by the pipeline's own code, and its port."""

import json
import os
import subprocess
import sys
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


def port_command(*args, cwd=ROOT, pythonpath=(ROOT,)):
    """`python -m sam3spec port ARGS` in its own process (as a user runs it)."""
    env = {"PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "2",
           "SAM3SPEC_JOBS": "2"}  # two components at once: most of a step is one core's work
    return subprocess.run([sys.executable, "-m", "sam3spec", "port", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=3000)


@pytest.fixture(scope="session")
def tiny_port():
    """The tiny manifest ported to the cpu target under build/ (every component): (process result, report)."""
    result = port_command("manifests/sam3-image-tiny.yaml", "--target", "cpu")
    report = json.loads((ROOT / "build" / "sam3-image-tiny" / "cpu" / "report.json").read_text())
    return result, report
