#!/usr/bin/env bash
# Build a small folder that lets a GPU machine with no package index run TVM-compiled sam3spec
# artifacts: the TVM *runtime* (apache-tvm's wheel without its compiler library), the apache-tvm-ffi
# wheel for that machine's Python, and the sam3 + open_clip_torch wheels (to rebuild the seeded PyTorch
# reference there). Downloads from the package index; tools/gpu-stage.sh calls it and adds the rest.
#
#   usage: tools/gpu-runtime-bundle.sh [OUTDIR=.gpu-bundle] [PYVER=3.12]   (PYVER: the GPU machine's Python)
#
# On the GPU machine (tools/gpu-run.sh does this):
#   mkdir -p /tmp/site && tar -xJf OUTDIR/tvm-runtime.tar.xz -C /tmp/site
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site OUTDIR/*.whl
#   export PYTHONPATH=/tmp/site TVM_USE_RUNTIME_LIB=1
# Runtime-only TVM loads libtvm_runtime.so alone: sam3spec.runtime.loader loads tvm/lib/libtvm_runtime_extra.so
# and tvm/lib/libtvm_runtime_cuda.so (ctypes, RTLD_GLOBAL) before tvm.cuda(), and, since a CUDA library exported
# by apache-tvm 0.27 carries CUDA source compiled when it is loaded, registers tvm_callback_cuda_compile to run
# nvcc (runtime.loader.cuda_jit).
set -euo pipefail
OUT=${1:-.gpu-bundle}
PYVER=${2:-3.12}
TVM_VERSION=$(sed -n 's/^TVM = "apache-tvm==\(.*\)"$/\1/p' "$(dirname "$0")/../noxfile.py")
# the ffi pinned in noxfile.py (TVM_FFI): 0.1.15.post2, which pip picks, segfaults in ToJSONGraph with TVM 0.27
FFI_VERSION=$(sed -n 's/^TVM_FFI = "apache-tvm-ffi==\(.*\)"$/\1/p' "$(dirname "$0")/../noxfile.py")
[ -n "$TVM_VERSION" ] && [ -n "$FFI_VERSION" ] || { echo "no TVM / TVM_FFI pin in noxfile.py" >&2; exit 2; }
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps -d "$tmp" "apache-tvm==$TVM_VERSION"
(cd "$tmp" && python3 -m zipfile -e apache_tvm-*.whl pkg >/dev/null)
tar -C "$tmp/pkg" --exclude='tvm/3rdparty' --exclude='tvm/src' --exclude='tvm/include' \
    --exclude='tvm/web' --exclude='__pycache__' --exclude='tvm/lib/libtvm_compiler.so' \
    -cJf "$OUT/tvm-runtime.tar.xz" tvm
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d "$OUT" \
    "apache-tvm-ffi==$FFI_VERSION" sam3==0.1.4 open_clip_torch==3.3.0
du -sh "$OUT"
ls -l "$OUT"
