#!/usr/bin/env bash
# On a GPU machine with torch but no TVM and no package index (the device machine), from the repository
# root with .gpu-bundle and .gpu-carry from tools/gpu-stage.sh: install the TVM runtime and the bundled
# wheels under /tmp/site, rebuild each component's weights and reference from the seed, verify every
# compiled CUDA library (components in parallel), and time each against PyTorch on the same GPU.
#
#   usage: tools/gpu-run.sh MANIFEST TARGET [TARGET ...]   (results under build/<name>/<target>/)
#   JOBS: components verified at once (default 4); BENCH=0 skips the timing; COMPONENTS="a b": only these;
#   PROFILE="a b": also these components kernel by kernel (build/<name>/<target>/profile.md);
#   MEASURE="DIR ...": afterwards, time the tuning stages in DIR/<component> (`tune --stage`), timings.json there
set -uo pipefail
manifest=$1; shift
mkdir -p /tmp/site
tar -xJf .gpu-bundle/tvm-runtime.tar.xz -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-bundle/*.whl
export PYTHONPATH=/tmp/site:$PWD TVM_USE_RUNTIME_LIB=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
for staged in .gpu-carry/*.tar.xz; do tar -xJf "$staged"; done
names=${COMPONENTS:-}
[ -n "$names" ] || names=$(python3 -c "import sys; from sam3spec import manifest, plan; from pathlib import Path
print(' '.join(c.name for c in plan.make(manifest.load(sys.argv[1]), Path('.')).components))" "$manifest")
status=0
for target in "$@"; do
  for name in $names; do echo "$name"; done | xargs -P "${JOBS:-4}" -I{} sh -c \
    "python3 -m sam3spec port $manifest --target $target --verify-only -c {} > build/verify-$target-{}.log 2>&1"
  only=$(for name in $names; do printf -- "-c %s " "$name"; done)
  python3 -m sam3spec report "$manifest" --target "$target" $only || status=1
  if [ "${BENCH:-1}" = 1 ]; then python3 -m sam3spec bench "$manifest" --target "$target" $only || status=1; fi
  if [ -n "${PROFILE:-}" ]; then
    python3 -m sam3spec profile "$manifest" --target "$target" $(for name in $PROFILE; do printf -- "-c %s " "$name"; done) || status=1
  fi
done
for stage in ${MEASURE:-}; do
  for dir in "$stage"/*/; do
    [ -f "$dir/stage.json" ] && { python3 -m sam3spec.runtime.staged_timing "$dir" || status=1; }
  done
done
exit $status
