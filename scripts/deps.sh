#!/bin/sh
# deps.sh: make sure the OS packages moesys builds with are present.
# moesys needs a C compiler (gcc + libc headers) for its SIMD kernels,
# which it builds through cgo, and Open MPI (libopenmpi-dev, openmpi-bin,
# and pkg-config to find it) for the MPI backend of dist. If they are
# missing, install them with apt-get when we can; otherwise fall back (to
# the portable Go kernels, slower; to a build without MPI) and say so.
# node-deps.sh then installs Node.js, npm and the pinned OpenAI client for
# the real-client test of moesys serve.
# Prints the CGO_ENABLED value to use on stdout; messages go to stderr.
set -u
can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }
have_cc() { command -v "${CC:-gcc}" >/dev/null 2>&1 && [ -e /usr/include/stdlib.h ]; }
have_mpi() { command -v mpirun >/dev/null 2>&1 && pkg-config --exists ompi-c 2>/dev/null; }
"$(dirname "$0")/node-deps.sh"
if ! have_cc && can_apt; then
	echo "moesys: installing gcc and libc6-dev (C compiler for the SIMD kernels, via cgo)" >&2
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev) >&2 || true
fi
# clang-16 compile-checks the GPU kernels' CUDA C with no CUDA toolkit, and its clang++-16 builds their CPU emulator (gpu/kernels tests).
command -v clang-16 >/dev/null 2>&1 || ! can_apt || { echo "moesys: installing clang-16 (compile check and CPU emulator of the GPU kernels)" >&2; (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-16) >&2 || true; }
if ! have_cc; then
	echo "moesys: no C compiler: building the portable Go kernels (several times slower), without MPI" >&2
	echo 0
	exit 0
fi
if ! have_mpi && can_apt; then
	echo "moesys: installing Open MPI (libopenmpi-dev openmpi-bin pkgconf) for the MPI backend" >&2
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin pkgconf) >&2 || true
fi
if ! have_mpi; then
	echo "moesys: no Open MPI: building without the MPI backend (make test-mpi skips)" >&2
fi
echo 1
