"""Stand-in for `torchvision`: PyPI torchvision is linked against CUDA torch and fails to import on CPU torch.

Served under the name `torchvision` (see the manifest substitution `torchvision_standin`). It carries real
implementations of what SAM3's image path calls; every other name is a placeholder that raises when used.
"""

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)
__version__ = "0.0.0+sam3spec.standin"

