#!/bin/sh
# node-deps.sh: Node.js, npm and the pinned OpenAI client package for the
# real-client test of `moesys serve` (cmd/moesys TestServeNodeClient).
# Installs nodejs and npm with apt-get when node is missing and we can,
# then the packages of serve/testdata/client with `npm ci` (exact versions
# from its package-lock.json) when they are not there yet. Messages go to
# stderr; failures are reported, not fatal: the test then says what is
# missing (and fails where MOESYS_REQUIRE_NODE=1, as in `make test`).
set -u
cd "$(dirname "$0")/.."
client=serve/testdata/client
if ! command -v node >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "moesys: installing nodejs and npm (the OpenAI Node.js client test of moesys serve)" >&2
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >&2 || true
fi
if ! command -v npm >/dev/null 2>&1; then
	echo "moesys: no npm: the OpenAI Node.js client test of moesys serve cannot run" >&2
	exit 0
fi
if [ ! -f "$client/node_modules/openai/package.json" ] || [ "$client/package-lock.json" -nt "$client/node_modules/.package-lock.json" ]; then
	echo "moesys: npm ci in $client (the pinned openai package)" >&2
	npm ci --prefix "$client" --no-audit --no-fund --loglevel=error >&2 || echo "moesys: npm ci failed in $client" >&2
fi
