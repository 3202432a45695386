#!/bin/sh
# deps.sh: make sure the OS packages moesys builds with are present.
# moesys needs only a C compiler (gcc + libc headers) for its SIMD kernels,
# which it builds through cgo. If it is missing, install it with apt-get when
# we can; otherwise fall back to the portable Go kernels (slower) and say so.
# Prints the CGO_ENABLED value to use on stdout; messages go to stderr.
set -u
have_cc() { command -v "${CC:-gcc}" >/dev/null 2>&1 && [ -e /usr/include/stdlib.h ]; }
if ! have_cc; then
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		echo "moesys: installing gcc and libc6-dev (C compiler for the SIMD kernels, via cgo)" >&2
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev) >&2 || true
	fi
fi
if have_cc; then
	echo 1
else
	echo "moesys: no C compiler: building the portable Go kernels (several times slower)" >&2
	echo 0
fi
