"""Sessions: `nox -s port-cpu [-- MANIFEST] [--component NAME]`, `port-metal`, `port-cuda`,
`bench [-- MANIFEST]`, `e2e-cpu [-- MANIFEST]`, `tests`."""

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

TORCH = "torch==2.13.0"  # the CPU build; installed first so that nothing else brings a CUDA torch
TVM = "apache-tvm==0.27.0.post1"
# sam3 0.1.4's own requirements (and those it imports without declaring: psutil, pillow; scipy for its Hungarian
# matching, scikit-image for its CPU connected components, which SAM's mask post-processing calls), minus
# torch/torchvision.
SAM3_DEPS = ["numpy>=1.26,<2.4", "tqdm>=4.66,<4.68", "ftfy>=6.1.1,<6.4", "regex>=2025.11.3",
             "iopath>=0.1.10,<0.2", "typing_extensions>=4.8,<4.16", "huggingface-hub>=0.30,<2.0",
             "einops>=0.8,<0.9", "pycocotools>=2.0.10,<2.1", "psutil", "pillow", "safetensors", "pyyaml",
             "scipy>=1.11", "scikit-image==0.26.0"]
NO_DEPS = ["sam3==0.1.4", "timm==1.0.31", "open_clip_torch==3.3.0"]  # each would pull torch + torchvision


def install(session: nox.Session) -> None:
    session.install(TORCH)
    session.install(TVM, *SAM3_DEPS, "jsonschema", "jinja2", "cloudpickle")  # cloudpickle: TVM's RPC server
    session.install("--no-deps", *NO_DEPS)
    session.install("--no-deps", "-e", ".")
    session.run("python", "-c", "import torch, sys; v = torch.__version__; print('torch', v); "
                "sys.exit(0 if v.startswith('2.13.0') and not torch.version.cuda else 'a CUDA torch was installed')",
                silent=False)


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
def bench(session: nox.Session) -> None:
    """TVM vs PyTorch eager latency per component on this CPU; ports what is not compiled yet.
    Writes build/<manifest>/cpu/bench.json and bench.md."""
    install(session)
    session.run("python", "-m", "sam3spec", "bench", "--target", "cpu", "--build", *manifest_args(session))


@nox.session(name="e2e-cpu")
def e2e_cpu(session: nox.Session) -> None:
    """SAM3 end to end on the CPU modules against PyTorch: the manifest's text, box and point prompts on a
    photograph, under its parity contract (ports what is not compiled yet). Writes build/<manifest>/cpu/e2e/."""
    install(session)
    session.run("python", "-m", "sam3spec", "e2e", "--target", "cpu", "--build", *manifest_args(session))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, including the tiny manifest through the whole real pipeline."""
    install(session)
    session.install("pytest")
    session.run("pytest", "-q", *session.posargs)
