#!/bin/sh
# gpu-check.sh: every check of issue 9 in one run, on a machine with an
# NVIDIA GPU, the CUDA libraries (driver, cuBLAS, NVRTC) and, for the peer
# figures, PyTorch + transformers + accelerate; no Go needed there.
#
#   here:  make gpu-bins          (bin/moesys and the GPU test binaries, stripped)
#   there: sh scripts/gpu-check.sh [OUTDIR]
#
# The CUDA libraries are found through MOESYS_CUDA_LIBDIR or the loader
# path; this script adds PyTorch's bundled ones (torch/lib, nvidia/*/lib) when
# present. Results: OUTDIR/*.txt (test logs) and OUTDIR/*.json (bench results).
set -u
out=${1:-${OUT:-gpu-check-out}}
mkdir -p "$out"
libs=$(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import torch
    d = [os.path.join(os.path.dirname(torch.__file__), "lib")]
except Exception:
    d = []
for site in __import__("site").getsitepackages():
    d += glob.glob(os.path.join(site, "nvidia", "*", "lib"))
print(":".join(x for x in d if os.path.isdir(x)))
PY
)
[ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.txt" 2>&1
status=0
run() { # name dir binary args...
	name=$1 dir=$2; shift 2
	echo "== $name" >&2
	(cd "$dir" && "$@") > "$out/$name.txt" 2>&1 || { status=1; echo "   FAILED (see $out/$name.txt)" >&2; }
	tail -3 "$out/$name.txt" >&2
}
run cuda-test gpu/cuda ../../bin/gpu-cuda.test -test.v -test.timeout 5m
run kernels-test gpu/kernels ../../bin/gpu-kernels.test -test.v -test.timeout 5m
run gpu-test gpu ../bin/gpu.test -test.v -test.timeout 8m
if [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
	run bench-decode . bin/moesys bench decode --device cuda --json
	run bench-offload . bin/moesys bench offload --device cuda --json
fi
exit $status
