"""Build the whole model the manifest describes: seeded random weights, constructor overrides, checkpoint."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from pathlib import Path

import torch

from sam3spec.runtime import substitute
from sam3spec.runtime.checkpoint import checkpoint_path
from sam3spec.runtime.artifacts import progress
from sam3spec.runtime.resolve import resolve


@contextlib.contextmanager
def constructor_overrides(overrides: dict[str, dict]):
    """While active, `module:Class` names build with the given keyword arguments forced.

    The class is wrapped where the builder looks it up (its own module and every loaded module that
    imported it by name), so the real class, with the real code, is what gets built.
    """
    import sys

    patched = []
    try:
        for dotted, forced in overrides.items():
            cls = resolve(dotted)

            def make(*args, __cls=cls, __forced=dict(forced), **kwargs):
                kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in __forced.items()})
                return __cls(*args, **kwargs)

            functools.update_wrapper(make, cls, updated=())
            for module in list(sys.modules.values()):
                for name, value in list(getattr(module, "__dict__", {}).items()):
                    if value is cls and module.__name__.startswith(dotted.split(".")[0]):
                        setattr(module, name, make)
                        patched.append((module, name, cls))
        yield
    finally:
        for module, name, cls in patched:
            setattr(module, name, cls)


def package_file(ref: dict) -> str:
    """The data file {package, file} an installed package ships (open_clip's BPE vocabulary, a photograph)."""
    return str(Path(importlib.util.find_spec(ref["package"]).submodule_search_locations[0]) / ref["file"])


def build(model: dict, manifest_dir: Path) -> torch.nn.Module:
    """Build the full model on CPU in eval mode, with the manifest's seed, overrides and weights."""
    torch.manual_seed(model["weights"]["seed"])
    kwargs = dict(model.get("builder_args", {}))
    vocab = model.get("vocabulary")
    if vocab:
        kwargs[vocab["argument"]] = package_file(vocab)
    progress(f"building {model['builder']} ({model['package']} {model['version']})")
    builder = resolve(model["builder"])
    with constructor_overrides(model.get("overrides", {})):
        net = builder(**kwargs)
    # Parameters the package creates with torch.empty and leaves to the checkpoint: seeded normal values.
    params = dict(net.named_parameters())
    for key in ("initialise", "without_checkpoint"):
        unknown = sorted(set(model["weights"].get(key, {})) - set(params))
        if unknown:
            raise ValueError(f"model.weights.{key}: {model['builder']} has no parameter {', '.join(unknown)}")
    with torch.no_grad():
        for name, std in model["weights"].get("initialise", {}).items():
            params[name].normal_(0.0, std)
    ckpt = checkpoint_path(model["weights"], manifest_dir)
    with torch.no_grad():
        for name, value in (model["weights"].get("without_checkpoint", {}) if ckpt is None else {}).items():
            params[name].fill_(value)
    if ckpt is not None:
        progress(f"loading checkpoint {ckpt}")
        resolve(model["weights"]["loader"])(net, str(ckpt))
    return net.eval()


def adapter_root(model: dict, net: torch.nn.Module) -> torch.nn.Module:
    """What every component's adapter receives: the built model, or the manifest's `view` of it."""
    return resolve(model["view"])(net) if model.get("view") else net


def build_substituted(model: dict, manifest_dir: Path) -> torch.nn.Module:
    """:func:`build` after the manifest's import- and build-phase substitutions, as every step builds it."""
    subs = model.get("substitutions", [])
    substitute.apply(subs, "import")
    substitute.apply(subs, "build")
    return build(model, manifest_dir)
