package emu

import (
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/gpu/kernels"
)

//go:embed emu.h
var header string

// ErrUnavailable is wrapped by Load's error when the emulator cannot run
// here: no C++ compiler ($CXX, g++, clang++ or clang++-16), or a build
// without cgo. Tests skip on it; any other error is a failure.
var ErrUnavailable = errors.New("emu: unavailable")

// CXX returns the C++ compiler Load uses: $CXX, else the first of g++,
// clang++, clang++-16 on the PATH; the error wraps ErrUnavailable.
func CXX() (string, error) {
	if c := os.Getenv("CXX"); c != "" {
		return c, nil
	}
	for _, c := range []string{"g++", "clang++", "clang++-16"} {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no C++ compiler ($CXX, g++, clang++ or clang++-16)", ErrUnavailable)
}

// Program returns the C++ translation unit for act: emu.h, the kernel
// sources exactly as NVRTC gets them, and the launch entry point that
// dispatches on the kernel name.
func Program(act cuda.DataType) (string, error) {
	src, err := kernels.Source(act)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n// ---- kernels.Source ----\n")
	b.WriteString(src)
	b.WriteString(`
// ---- launch entry point ----
extern "C" __attribute__((visibility("default"))) const char* emu_launch(const char* name, const char* kinds, void** p,
	unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, size_t shared, char* err, size_t errLen) {
	dim3 g{gx, gy, gz}, b{bx, by, bz};
`)
	for _, n := range kernels.Names() {
		fmt.Fprintf(&b, "\tif (!std::strcmp(name, %q)) return emu::launch(%s, kinds, p, g, b, shared, err, errLen);\n", n, n)
	}
	b.WriteString("\tstd::snprintf(err, errLen, \"no kernel %s\", name);\n\treturn err;\n}\n")
	return b.String(), nil
}

// build compiles Program(act) into a shared library in the user cache
// directory, named by the hash of the program and compiler, and returns
// its path; an existing library is reused.
func build(act cuda.DataType) (string, error) {
	prog, err := Program(act)
	if err != nil {
		return "", err
	}
	cxx, err := CXX()
	if err != nil {
		return "", err
	}
	args := []string{"-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-fvisibility=hidden", "-w", "-x", "c++"}
	sum := sha256.Sum256([]byte(cxx + "\x00" + strings.Join(args, " ") + "\x00" + prog))
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "moesys-kernelemu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("emu: %w", err)
	}
	lib := filepath.Join(dir, fmt.Sprintf("kernels-%v-%x.so", act, sum[:8]))
	if _, err := os.Stat(lib); err == nil {
		return lib, nil
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("emu: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "kernels.cc")
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		return "", fmt.Errorf("emu: %w", err)
	}
	out := filepath.Join(tmp, "kernels.so")
	cmd := exec.Command(cxx, append(args, "-o", out, src)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("emu: %s %s: %v\n%s", cxx, strings.Join(args, " "), err, msg)
	}
	if err := os.Rename(out, lib); err != nil { // atomic: concurrent builds agree
		return "", fmt.Errorf("emu: %w", err)
	}
	return lib, nil
}
