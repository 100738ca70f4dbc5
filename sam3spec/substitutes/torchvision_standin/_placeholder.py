"""Names SAM3 or timm import from torchvision but the ported path never calls."""

import importlib


class _Placeholder:
    """Stands for a torchvision name SAM3 imports but the ported path never uses."""

    def __init__(self, qualname: str):
        self._qualname = qualname

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(
            f"{self._qualname} is not available: torchvision is replaced by "
            f"sam3spec.substitutes.torchvision_standin (see the manifest's substitutions)"
        )

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self._qualname}.{name}")

    def __mro_entries__(self, bases):
        return (object,)


def module_getattr(module_name: str):
    """A module-level __getattr__ that answers every unknown name with a placeholder."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:  # a real submodule of the stand-in (`from torchvision.transforms import v2` asks here first)
            return importlib.import_module(f"{module_name}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module_name}.{name}":
                raise
        return _Placeholder(f"{module_name}.{name}".replace("sam3spec.substitutes.torchvision_standin", "torchvision"))

    return __getattr__
