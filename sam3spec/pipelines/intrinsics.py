"""TVM's tensor intrinsics (wmma, mma, simdgroup, dot products), registered in seconds instead of minutes.

Why: registering them parses TVMScript macros, and each macro looks for its parser with
`inspect.getouterframes`; every outer frame whose file is no module (a frozen module's `<frozen NAME>`:
importlib's while an import runs, runpy's under `python -m`; `<string>`, `<ast>`) makes `inspect.getmodule`
scan all of `sys.modules` (about 2,000 entries once torch is in): `import tvm.s_tir.tensor_intrin` took 87 s
here, 6.6 s with those names in inspect's own file-to-module cache. No module has such a file, so the scan's
answer for them is None whatever it finds: recording that answer first changes no result, only the time."""

from __future__ import annotations

import inspect
import sys

# file names of frames that belong to no module, beside each frozen module's `<frozen NAME>` (runpy under
# `python -m`, importlib's while an import runs): inspect.getmodule's scan can never map them
NO_MODULE = ("<string>", "<ast>")


def quick_frames() -> None:
    """Record that these frames' files are no module, before anything (dlight's rules, lazily) registers them."""
    frozen = [f"<frozen {name}>" for name, module in list(sys.modules.items())
              if getattr(getattr(module, "__spec__", None), "origin", None) == "frozen"]
    for name in (*NO_MODULE, *frozen):
        inspect.modulesbyfile.setdefault(name, "")  # sys.modules.get("") is None: the scan's own answer


def register():
    """Every target's tensor intrinsics registered (once per process); returns `tvm.s_tir.tensor_intrin`."""
    quick_frames()
    import tvm.s_tir.tensor_intrin  # pylint: disable=import-outside-toplevel

    return tvm.s_tir.tensor_intrin
