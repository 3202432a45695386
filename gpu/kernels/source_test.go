package kernels

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
)

// TestNames checks that Names lists exactly the kernels the sources define.
func TestNames(t *testing.T) {
	src, err := Source(cuda.F32)
	if err != nil {
		t.Fatal(err)
	}
	var defined []string
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`extern "C" __global__ void ([a-z]\w*)\(`), // not the GEMV_KERNEL macro body
		regexp.MustCompile(`(?m)^GEMV_KERNEL\((\w+),`),
	} {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			defined = append(defined, m[1])
		}
	}
	names := Names()
	slices.Sort(defined)
	slices.Sort(names)
	if !slices.Equal(defined, names) {
		t.Errorf("sources define %v\nNames lists   %v", defined, names)
	}
}

func TestSourceTypes(t *testing.T) {
	for _, c := range []struct {
		act  cuda.DataType
		want string
	}{{cuda.F32, "#define ACT_BF16 0\n"}, {cuda.BF16, "#define ACT_BF16 1\n"}} {
		src, err := Source(c.act)
		if err != nil || !strings.HasPrefix(src, c.want) {
			t.Errorf("Source(%v) starts %q, %v; want %q", c.act, src[:min(len(src), 20)], err, c.want)
		}
	}
	if _, err := Source(cuda.F16); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Source(F16): %v, want ErrUnsupported", err)
	}
}

// clang is the compiler of TestClangCompile; deps.sh installs it.
const clang = "clang-16"

// TestClangCompile compiles Source for sm_90 with clang's CUDA front end,
// with testdata/clang_prelude.cuh standing in for what NVRTC provides (no
// CUDA toolkit needed): syntax, types, templates and every kernel's
// presence are checked before a GPU machine sees the code. With -O3 no
// kernel may use local memory (a register array indexed at run time, or
// a spill clang can see).
func TestClangCompile(t *testing.T) {
	cc, err := exec.LookPath(clang)
	if err != nil {
		t.Skipf("%s not installed (scripts/deps.sh installs it): %v", clang, err)
	}
	prelude, err := os.ReadFile("testdata/clang_prelude.cuh")
	if err != nil {
		t.Fatal(err)
	}
	for _, act := range []cuda.DataType{cuda.F32, cuda.BF16} {
		src, err := Source(act)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		in, out := filepath.Join(dir, "kernels.cu"), filepath.Join(dir, "kernels.ptx")
		if err := os.WriteFile(in, append(prelude, src...), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(cc, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_90", "-nocudainc", "-nocudalib",
			"-Xclang", "-target-feature", "-Xclang", "+ptx78", "-O3", "-Wall", "-Wno-unused-function", "-Werror", "-S", "-o", out, in)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", act, err, msg)
		}
		ptx, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range Names() {
			if !strings.Contains(string(ptx), ".entry "+n+"(") {
				t.Errorf("%v: kernel %s missing from the PTX", act, n)
			}
		}
		for _, entry := range strings.Split(string(ptx), ".entry ")[1:] {
			if strings.Contains(entry, "__local_depot") {
				t.Errorf("%v: kernel %s uses local memory", act, entry[:strings.IndexByte(entry, '(')])
			}
		}
	}
}
