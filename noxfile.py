"""Sessions: `nox -s port-cpu [-- MANIFEST] [--component NAME]`, `port-metal`, `port-cuda`, `tune [-- MANIFEST]`,
`bench [-- MANIFEST]`, `e2e-cpu [-- MANIFEST]`, `e2e-video [-- MANIFEST]`, `tests` (on every Python in PYTHONS: `tests-3.11`, `tests-3.13`),
`fuzz [-- CASES]`."""

import os
import re
import shutil
import subprocess

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

PYTHONS = ["3.11", "3.13"]  # `nox -s tests` runs both; nox skips one it cannot find, but not where CI is set
TORCH = "2.13.0"  # installed first, the CPU build where pip sees one, so that nothing else brings another torch
TVM = "apache-tvm==0.27.0.post1"
# the ffi that TVM 0.27.0.post1 was built with: pip picks 0.1.15.post2, whose ABI crashes in tvm::ffi::ToJSONGraph
# (Schedule.tensorize, MetaSchedule, save_json). tests/test_ffi_pin.py fails if another slips in.
TVM_FFI = "apache-tvm-ffi==0.1.14.post0"
# sam3 0.1.4's own requirements (and those it imports without declaring: psutil, pillow; scipy for its Hungarian
# matching, scikit-image for its CPU connected components, which SAM's mask post-processing calls), minus
# torch/torchvision.
SAM3_DEPS = ["numpy>=1.26,<2.4", "tqdm>=4.66,<4.68", "ftfy>=6.1.1,<6.4", "regex>=2025.11.3",
             "iopath>=0.1.10,<0.2", "typing_extensions>=4.8,<4.16", "huggingface-hub>=0.30,<2.0",
             "einops>=0.8,<0.9", "pycocotools>=2.0.10,<2.1", "psutil", "pillow", "safetensors", "pyyaml",
             "scipy>=1.11", "scikit-image==0.26.0"]
# bench's ONNX Runtime column only: the runtime, and what torch.onnx's dynamo export needs
ONNX_PEER = ("onnxruntime==1.32.0", "onnx==1.23.2", "onnxscript==0.7.2")
NO_DEPS = ["sam3==0.1.4", "timm==1.0.31", "open_clip_torch==3.3.0"]  # each would pull torch + torchvision


def _pyenv_interpreters(versions: list[str]) -> None:
    """pyenv's shims run only the versions pyenv has active: make the newest installed X.Y.Z of each of `versions`
    active too, for this nox run only (PYENV_VERSION), so that nox finds python3.13 where pyenv has it."""
    pyenv = shutil.which("pyenv") or os.path.join(os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv")),
                                                  "bin", "pyenv")
    if not os.access(pyenv, os.X_OK):
        return
    try:
        root = os.environ.get("PYENV_ROOT") or subprocess.run([pyenv, "root"], capture_output=True, text=True,
                                                             check=True).stdout.strip()
        active = os.environ.get("PYENV_VERSION") or subprocess.run(
            [pyenv, "version-name"], capture_output=True, text=True, check=True).stdout.strip()
        installed = os.listdir(os.path.join(root, "versions"))
    except (OSError, subprocess.CalledProcessError):
        return
    names = [v for v in active.split(":") if v]
    for want in versions:
        if any(v == want or v.startswith(want + ".") for v in names):
            continue
        found = [v for v in installed if re.fullmatch(re.escape(want) + r"\.\d+", v)]
        if found:
            names.append(max(found, key=lambda v: int(v.rpartition(".")[2])))
    if names:
        os.environ["PYENV_VERSION"] = ":".join(names)


_pyenv_interpreters(PYTHONS)

# torch's distribution version ('2.13.0+cpu': the CPU build; '2.13.0': PyPI's) and CUDA version, on one line.
TORCH_BUILD = "import importlib.metadata as m, torch; build = f\"{m.version('torch')} (CUDA {torch.version.cuda})\""
SHOW_TORCH = TORCH_BUILD + "; print(build)"
SAME_TORCH = TORCH_BUILD + ("; import sys; print('torch', build); sys.exit(0 if build == sys.argv[1] else "
                            "f'torch {sys.argv[1]} was replaced by {build} after it was installed')")


def install(session: nox.Session, extra: tuple[str, ...] = ()) -> None:
    # torch first: the CPU build (2.13.0+cpu) where pip sees one (this machine's local wheel for Python 3.11, or
    # PyTorch's CPU index where pip is pointed at it); elsewhere PyPI's 2.13.0, on Linux a CUDA build with the
    # nvidia-* libraries and triton (it runs on the CPU; ~5 GB installed), on macOS a CPU build.
    if session.run_install("python", "-m", "pip", "install", "-q", f"torch=={TORCH}+cpu", silent=True,
                           success_codes=[0, 1]) is None:
        return  # --no-install on a reused environment
    build = session.run_install("python", "-c", SHOW_TORCH, silent=True, success_codes=[0, 1]).splitlines()[-1]
    if not build.startswith(f"{TORCH}+cpu "):
        session.log(f"no CPU build of torch {TORCH} for this Python here: PyPI's")
        session.install(f"torch=={TORCH}")
        build = session.run_install("python", "-c", SHOW_TORCH, silent=True).splitlines()[-1]  # after warnings
    # cloudpickle: TVM's RPC server; tornado: its RPC tracker; xgboost-cpu: MetaSchedule's cost model (`tune`), the
    # build without NCCL (xgboost's Linux wheel pulls nvidia-nccl-cu12)
    session.install(TVM, TVM_FFI, *SAM3_DEPS, "jsonschema", "jinja2", "cloudpickle", "tornado", "xgboost-cpu")
    session.install("--no-deps", *NO_DEPS)
    session.install("--no-deps", "-e", ".")
    if extra:  # with sam3's numpy bound, which onnx and onnxruntime would otherwise lift
        session.install(*extra, *[d for d in SAM3_DEPS if d.startswith("numpy")])
    # Nothing installed after torch may replace it (a package that asks for torch brings PyPI's newest CUDA build).
    session.run_install("python", "-c", SAME_TORCH, build)


def manifest_args(session: nox.Session) -> list[str]:
    """The session's arguments, with the full-size manifest in front when none is named."""
    given = any(a.endswith(".yaml") for a in session.posargs)
    return list(session.posargs) if given else ["manifests/sam3-image.yaml", *session.posargs]


def port(session: nox.Session, target: str) -> None:
    install(session)
    session.run("python", "-m", "sam3spec", "port", "--target", target, *manifest_args(session))


@nox.session(name="port-cpu")
def port_cpu(session: nox.Session) -> None:
    """Port a manifest to the CPU (LLVM) and verify every component against PyTorch."""
    port(session, "cpu")


@nox.session(name="port-metal")
def port_metal(session: nox.Session) -> None:
    """Compile for Apple GPUs (Metal); verification runs only where a Metal device exists."""
    port(session, "metal")


@nox.session(name="port-cuda")
def port_cuda(session: nox.Session) -> None:
    """Compile for NVIDIA GPUs (CUDA, no Triton/FlashAttention); verification runs only where a GPU exists."""
    port(session, "cuda")


@nox.session
def tune(session: nox.Session) -> None:
    """MetaSchedule-tune a manifest's components for a target (default cpu) into tuning/: `nox -s tune -- [MANIFEST]
    [--target T] [-c NAME] [--trials N] [--tracker HOST:PORT --key KEY]`."""
    install(session)
    args = manifest_args(session)
    session.run("python", "-m", "sam3spec", "tune", *args, *([] if "--target" in args else ["--target", "cpu"]))


@nox.session
def bench(session: nox.Session) -> None:
    """TVM vs PyTorch eager and ONNX Runtime latency per component on this CPU; ports what is not compiled yet.
    Writes build/<manifest>/cpu/bench.json and bench.md."""
    install(session, ONNX_PEER)
    session.run("python", "-m", "sam3spec", "bench", "--target", "cpu", "--build", *manifest_args(session))


@nox.session(name="e2e-cpu")
def e2e_cpu(session: nox.Session) -> None:
    """SAM3 end to end on the CPU modules against PyTorch: the manifest's text, box and point prompts on a
    photograph, under its parity contract (ports what is not compiled yet). Writes build/<manifest>/cpu/e2e/."""
    install(session)
    session.run("python", "-m", "sam3spec", "e2e", "--target", "cpu", "--build", *manifest_args(session))


@nox.session(name="e2e-video")
def e2e_video(session: nox.Session) -> None:
    """SAM3 video tracking on the CPU modules against PyTorch: the manifest's text and click prompts on the pan and
    zoom clip it makes from a photograph, every frame under its tracking contract (ports what is not compiled yet;
    default manifests/sam3-video.yaml). Writes build/<manifest>/cpu/e2e-video/."""
    install(session)
    given = [a for a in session.posargs if a.endswith(".yaml")]
    session.run("python", "-m", "sam3spec", "e2e-video", "--target", "cpu", "--build",
                *(given or ["manifests/sam3-video.yaml"]))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, including the tiny manifest through the whole real pipeline."""
    install(session)
    session.install("pytest")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Seeded random mutations of the shipped manifests through `validate`, more than the suite runs
    (`nox -s fuzz -- 20000`): every case exit 0 or 2 with located lines, no traceback, within its time bound."""
    install(session)
    session.install("pytest")
    cases = session.posargs[0] if session.posargs else "5000"
    session.run("pytest", "-q", "-s", "tests/test_fuzz_validate.py", env={"SAM3SPEC_FUZZ_CASES": cases})
