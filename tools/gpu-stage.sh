#!/usr/bin/env bash
# Stage what a GPU machine with only the TVM runtime needs to verify and benchmark CUDA libraries compiled
# here: the runtime bundle (.gpu-bundle: TVM runtime, apache-tvm-ffi, sam3 and the packages it imports that
# such a machine may lack) and, per component, the library and its records (.gpu-carry/NAME.tar.xz), without
# the weights, program and reference, which that machine rebuilds from the seed (`port --verify-only`).
#
#   usage: tools/gpu-stage.sh MANIFEST_NAME TARGET [TARGET ...]     e.g. tools/gpu-stage.sh sam3-image cuda
# then, on the GPU machine, from the repository root: tools/gpu-run.sh MANIFEST TARGET [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
if [ ! -f .gpu-bundle/tvm-runtime.tar.xz ]; then
  bash tools/gpu-runtime-bundle.sh .gpu-bundle 3.12
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_24_x86_64 -d .gpu-bundle timm==1.0.31 ftfy==6.3.1 wcwidth==0.9.4 \
    pycocotools==2.0.11 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 \
    rpds-py==2026.9.1
  python3 -m pip wheel -q --no-deps iopath==0.1.10 -w .gpu-bundle   # published as an sdist only
fi
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
for target in "$@"; do
  for dir in build/"$name"/"$target"/*/; do
    [ -f "$dir/compile.json" ] || continue
    mkdir -p "$staging/$dir"
    cp "$dir"/{lib.so,params.json,compile.json,export.json} "$staging/$dir" 2>/dev/null || true
  done
done
mkdir -p .gpu-carry
tar -C "$staging" -cJf ".gpu-carry/$name.tar.xz" build    # CUDA source and sine tables: ~1% of their size
du -sh .gpu-bundle .gpu-carry/*
