# The README's two commands: `make demo` runs the main job, `make test` the tests.
GO      ?= go
BIN     := bin/moesys
# CGO_ENABLED=1 when a C compiler is present (installed if missing), else 0.
CGO     := $(shell ./scripts/deps.sh)
export CGO_ENABLED := $(CGO)
# "-tags mpi" (dist's MPI backend) when Open MPI is installed (deps.sh
# installs it), else empty: the binary then runs without MPI.
MPITAGS := $(shell [ "$(CGO)" = 1 ] && pkg-config --exists ompi-c 2>/dev/null && echo -tags mpi)
# mpirun with the flags this machine needs (dist.MPIRunCommand adds the
# same): as root, --allow-run-as-root (mpirun refuses root otherwise); more
# ranks than cores need --oversubscribe, added where used. Anything else a
# machine needs goes in MOESYS_MPIRUN_FLAGS (e.g. "--mca btl self,vader
# --mca btl_vader_single_copy_mechanism none" where a container forbids
# cross-process memory copies); none is needed on the dev and CI machines.
MPIRUN  ?= mpirun $(if $(filter 0,$(shell id -u)),--allow-run-as-root) $(MOESYS_MPIRUN_FLAGS)

.PHONY: all build demo test test-mpi test-avx2 gpu-bins lint fuzz bench clean

all: build

build:
	$(GO) build $(MPITAGS) -o $(BIN) ./cmd/moesys

# Main job on the embedded default: train the tiny preset on the Go standard
# library sources of the installed toolchain (a minute or two on 2 cores),
# showing the falling loss, then generate a sample from the trained model.
demo: build
	./$(BIN) train --preset tiny --out runs/demo --sample 300

# Everything CI checks: formatting, vet, unit tests (with invariant checks;
# the OpenAI Node.js client test of moesys serve must run, not skip),
# the race detector on the concurrent code, the portable (no-cgo) kernels,
# every benchmark once, and a short fuzz of each parser.
test: lint
	MOESYS_REQUIRE_NODE=1 $(GO) test -tags invariants -count=1 ./...
	$(GO) test -race -short -count=1 ./kernel ./safetensors ./model ./moe ./dist ./train ./offload ./tokenizer ./sample ./serve
	$(MAKE) --no-print-directory test-mpi
	CGO_ENABLED=0 $(GO) test -short -count=1 ./kernel
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 ./... > /dev/null
	$(MAKE) --no-print-directory fuzz FUZZTIME=50000x

# dist's conformance suite on the MPI backend, then the distributed
# training gate (20 steps equal to one process): each test binary as the
# ranks of an mpirun job, 2 of them, then 4 (oversubscribed on 2 cores).
test-mpi:
ifeq ($(MPITAGS),)
	@echo "test-mpi: skipped: no Open MPI (apt-get install libopenmpi-dev openmpi-bin pkgconf)"
else
	$(GO) test -c -tags mpi -o bin/dist-mpi.test ./dist
	$(MPIRUN) -np 2 bin/dist-mpi.test -test.run 'ConformanceMPI' -test.timeout 5m
	$(MPIRUN) -np 4 --oversubscribe bin/dist-mpi.test -test.run 'ConformanceMPI' -test.timeout 5m
	$(GO) test -c -tags mpi -o bin/train-mpi.test ./train
	$(MPIRUN) -np 2 bin/train-mpi.test -test.run 'ParallelMPI|MultiTaskMPI' -test.timeout 5m
	$(MPIRUN) -np 4 --oversubscribe bin/train-mpi.test -test.run 'ParallelMPI|MultiTaskMPI' -test.timeout 5m
endif

# The kernel tests on an emulated x86 CPU without AVX-512 (qemu-user's
# Haswell model; apt-get install qemu-user): Detected is avx2 there, so the
# AVX2 C kernels run, and any AVX-512 instruction in them is an illegal
# instruction. Not part of `test`: it needs qemu and takes a few minutes.
test-avx2:
	$(GO) test -c -o bin/kernel.test ./kernel
	cd kernel && qemu-x86_64 -cpu Haswell ../bin/kernel.test -test.short

# The binaries scripts/gpu-check.sh runs on a GPU machine (which has no Go):
# moesys and the GPU packages' test binaries, stripped to travel light.
gpu-bins:
	$(GO) build -ldflags '-s -w' -o $(BIN) ./cmd/moesys
	$(GO) test -c -ldflags '-s -w' -o bin/gpu-cuda.test ./gpu/cuda
	$(GO) test -c -ldflags '-s -w' -o bin/gpu-kernels.test ./gpu/kernels
	$(GO) test -c -ldflags '-s -w' -o bin/gpu.test ./gpu

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
ifneq ($(MPITAGS),)
	$(GO) vet -tags mpi ./dist ./train ./cmd/moesys
	$(GO) tool staticcheck -tags mpi ./dist ./train ./cmd/moesys
endif

FUZZTIME ?= 60s
# Each fuzz target in turn (go test -fuzz takes one target per run). A short
# minimisation time keeps progress going with the large fixture-header seeds.
# `make test` gives each target an execution count, not a duration: Go 1.26's
# fuzz coordinator can fail a duration run spuriously with "context deadline
# exceeded" as the time runs out (go.dev/issue/75804, fixed in Go 1.27).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./safetensors
	$(GO) test -run '^$$' -fuzz '^FuzzParseIndex$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./safetensors
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./model
	$(GO) test -run '^$$' -fuzz '^FuzzOpenLayout$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./offload
	$(GO) test -run '^$$' -fuzz '^FuzzParseDiskStat$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./offload
	$(GO) test -run '^$$' -fuzz '^FuzzOpenStateFile$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./offload
	$(GO) test -run '^$$' -fuzz '^FuzzStopper$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./sample
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./tokenizer
	$(GO) test -run '^$$' -fuzz '^FuzzByteLevelRoundTrip$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./tokenizer
	$(GO) test -run '^$$' -fuzz '^FuzzSentencePieceRoundTrip$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./tokenizer
	$(GO) test -run '^$$' -fuzz '^FuzzParseBytes$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./cmd/moesys
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./serve

bench:
	$(GO) run ./cmd/moesys bench kernels
	$(GO) run ./cmd/moesys bench train
	$(GO) run ./cmd/moesys bench offload
	$(GO) run $(MPITAGS) ./cmd/moesys bench comm

clean:
	rm -rf bin
