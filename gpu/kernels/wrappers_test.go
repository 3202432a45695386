package kernels

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
)

// call is one recorded launch.
type call struct {
	kernel      string
	grid, block cuda.Dim3
	shared      int
	args        []any
}

// recorder is a Launcher that records launches instead of running them.
type recorder struct{ calls []call }

func (r *recorder) Launch(_ *cuda.Stream, kernel string, grid, block cuda.Dim3, shared int, args ...any) error {
	r.calls = append(r.calls, call{kernel, grid, block, shared, args})
	return nil
}

func newRecorded(t *testing.T, act cuda.DataType) (*Set, *recorder) {
	t.Helper()
	r := &recorder{}
	k, err := New(r, act, 132, 0x1000, AttentionWorkspaceBytes)
	if err != nil {
		t.Fatal(err)
	}
	return k, r
}

// TestValidation: invalid shapes are errors (unsupported ones wrap
// ErrUnsupported) and launch nothing; zero sizes launch nothing.
func TestValidation(t *testing.T) {
	const p = cuda.DevPtr(0x100)
	for _, c := range []struct {
		name        string
		f           func(k *Set) error
		unsupported bool // want ErrUnsupported
		ok          bool // no error (and no launch)
	}{
		{"rmsnorm negative rows", func(k *Set) error { return k.RMSNorm(nil, p, cuda.F32, p, p, -1, 8, 1e-6) }, false, false},
		{"rmsnorm f16 out", func(k *Set) error { return k.RMSNorm(nil, p+8, cuda.F16, p, p, 1, 8, 1e-6) }, true, false},
		{"rmsnorm bf16 in place", func(k *Set) error { return k.RMSNorm(nil, p, cuda.BF16, p, p, 1, 8, 1e-6) }, false, false},
		{"rmsnorm zero rows", func(k *Set) error { return k.RMSNorm(nil, p, cuda.F32, p, p, 0, 8, 1e-6) }, false, true},
		{"rmsnorm dim too big", func(k *Set) error { return k.RMSNorm(nil, p, cuda.F32, p, p, 1, 1<<31, 1e-6) }, false, false},
		{"rope odd rotDim", func(k *Set) error { return k.RoPE(nil, p, p, 1, 1, 8, 7, p, p) }, false, false},
		{"rope rotDim > Dh", func(k *Set) error { return k.RoPE(nil, p, p, 1, 1, 8, 10, p, p) }, false, false},
		{"rope checked negative maxPos", func(k *Set) error { return k.RoPEChecked(nil, p, p, 1, 1, 8, 8, p, p, -1) }, false, false},
		{"rope zero T", func(k *Set) error { return k.RoPE(nil, p, p, 0, 1, 8, 8, p, p) }, false, true},
		{"embed f16 table", func(k *Set) error { return k.Embed(nil, p, p, cuda.F16, p, 1, 8) }, true, false},
		{"embed zero T", func(k *Set) error { return k.Embed(nil, p, p, cuda.BF16, p, 0, 8) }, false, true},
		{"cast f16", func(k *Set) error { return k.Cast(nil, p, cuda.F16, p, cuda.F32, 4) }, true, false},
		{"cast negative", func(k *Set) error { return k.Cast(nil, p, cuda.BF16, p, cuda.F32, -4) }, false, false},
		{"topk K > E", func(k *Set) error { return k.SoftmaxTopK(nil, p, p, p, 1, 4, 5, true) }, false, false},
		{"topk K = 0", func(k *Set) error { return k.SoftmaxTopK(nil, p, p, p, 1, 4, 0, true) }, false, false},
		{"topk E too big", func(k *Set) error { return k.SoftmaxTopK(nil, p, p, p, 1, 1025, 2, true) }, true, false},
		{"topk zero T", func(k *Set) error { return k.SoftmaxTopK(nil, p, p, p, 0, 8, 2, true) }, false, true},
		{"attention H % G", func(k *Set) error { return k.Attention(nil, p, p, p, p, 1, 4, 3, 2, 64, 3, 0, 1) }, false, false},
		{"attention pos0+T > S", func(k *Set) error { return k.Attention(nil, p, p, p, p, 2, 4, 2, 2, 64, 3, 0, 1) }, false, false},
		{"attention Dh too big", func(k *Set) error { return k.Attention(nil, p, p, p, p, 1, 4, 2, 2, 257, 3, 0, 1) }, true, false},
		{"attention G = 0", func(k *Set) error { return k.Attention(nil, p, p, p, p, 1, 4, 2, 0, 64, 3, 0, 1) }, false, false},
		{"attention negative window", func(k *Set) error { return k.Attention(nil, p, p, p, p, 1, 4, 2, 2, 64, 3, -1, 1) }, false, false},
		{"attention zero T", func(k *Set) error { return k.Attention(nil, p, p, p, p, 0, 4, 2, 2, 64, 3, 0, 1) }, false, true},
		{"gemv f16 weights", func(k *Set) error { return k.ExpertsGemv(nil, p, p, p, cuda.F16, p, 1, 1, 8, 8, 0) }, true, false},
		{"gemv too many experts", func(k *Set) error { return k.ExpertsGemv(nil, p, p, p, cuda.BF16, p, 65536, 1, 8, 8, 0) }, true, false},
		{"gemv Kd = 0", func(k *Set) error { return k.ExpertsGemv(nil, p, p, p, cuda.BF16, p, 1, 1, 8, 0, 0) }, false, false},
		{"gemv no rows", func(k *Set) error { return k.ExpertsGemv(nil, p, p, p, cuda.BF16, p, 4, 0, 8, 8, 0) }, false, true},
		{"gather negative R", func(k *Set) error { return k.Gather(nil, p, p, p, -1, 8) }, false, false},
		{"combine zero K", func(k *Set) error { return k.Combine(nil, p, p, p, p, 3, 0, 8) }, false, true},
		{"kvappend negative at", func(k *Set) error { return k.KVAppend(nil, p, p, -1, 1, 8) }, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, r := newRecorded(t, cuda.BF16)
			err := c.f(k)
			switch {
			case c.ok && err != nil:
				t.Errorf("error %v, want none", err)
			case !c.ok && err == nil:
				t.Errorf("no error")
			case !c.ok && errors.Is(err, ErrUnsupported) != c.unsupported:
				t.Errorf("error %v: wraps ErrUnsupported %v, want %v", err, !c.unsupported, c.unsupported)
			case err != nil && !strings.HasPrefix(err.Error(), "kernels"):
				t.Errorf("error %q does not name the package", err)
			}
			if len(r.calls) != 0 {
				t.Errorf("launched %v", r.calls)
			}
		})
	}
	if _, err := New(&recorder{}, cuda.F16, 1, 0, 0); !errors.Is(err, ErrUnsupported) {
		t.Errorf("New(F16): %v, want ErrUnsupported", err)
	}
}

// TestLaunches checks kernel choice, geometry and argument lists of each
// wrapper on one representative call.
func TestLaunches(t *testing.T) {
	const p = cuda.DevPtr(0x100)
	k, r := newRecorded(t, cuda.BF16)
	check := func(err error, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range r.calls {
			got = append(got, fmt.Sprintf("%s %v %v %d", c.kernel, c.grid, c.block, c.shared))
		}
		if strings.Join(got, "; ") != strings.Join(want, "; ") {
			t.Errorf("launches\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		r.calls = nil
	}
	check(k.RMSNorm(nil, p+8, cuda.BF16, p, p, 3, 2048, 1e-6), "rmsnorm_act {3 0 0} {256 0 0} 0")
	check(k.RMSNorm(nil, p, cuda.F32, p, p, 48, 100, 1e-6), "rmsnorm_f32 {48 0 0} {128 0 0} 0")
	check(k.Embed(nil, p, p, cuda.BF16, p, 2, 64), "embed_bf16 {2 0 0} {64 0 0} 0")
	check(k.SwiGLU(nil, p, p, p, 4, 1000), "swiglu {16 0 0} {256 0 0} 0")
	check(k.SwiGLU(nil, p, p, p, 4096, 1<<15), "swiglu {65536 0 0} {256 0 0} 0") // grid-stride beyond
	check(k.Cast(nil, p, cuda.F32, p, cuda.BF16, 10), "cast_bf16_f32 {1 0 0} {256 0 0} 0")
	check(k.SoftmaxTopK(nil, p, p, p, 9, 64, 8, true), "softmax_topk {3 0 0} {128 0 0} 0")
	// Decode over a long cache: splits fill 2 blocks per SM of 132.
	check(k.Attention(nil, p, p, p, p, 1, 4096, 32, 8, 128, 4095, 0, 0.1),
		"attn_split {16 1 8} {128 0 0} 35456; attn_combine {32 0 0} {128 0 0} 0")
	// Prefill: no split.
	check(k.Attention(nil, p, p, p, p, 512, 512, 32, 8, 128, 0, 0, 0.1), "attn_split {1 256 8} {256 0 0} 38016")
	// Decode in a sliding window: splits cover the window only.
	check(k.Attention(nil, p, p, p, p, 1, 8192, 16, 16, 256, 8191, 1024, 0.1),
		"attn_split {4 1 16} {128 0 0} 37184; attn_combine {16 0 0} {256 0 0} 0")
	check(k.ExpertsGemv(nil, p, p, p, cuda.BF16, p, 64, 1, 1024, 2048, 0), "gemv_bf16_v_m1 {32 64 0} {256 0 0} 8192")
	check(k.ExpertsGemv(nil, p, p, p, cuda.BF16, p, 1, 16, 151936, 4096, 0), "gemv_bf16_v_m16 {4748 1 0} {256 0 0} 32768")
	check(k.ExpertsGemv(nil, p, p, p, cuda.F32, p, 8, 3, 100, 30, 1), "gemv_f32_s_m4 {4 8 0} {256 0 0} 512")

	// Argument lists follow the kernels' parameters (the emulator checks
	// their kinds against the signatures).
	if err := k.Combine(nil, 1, 2, 3, 4, 5, 6, 7); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(r.calls[0].args); got != "[1 2 3 4 5 6 7 -1]" {
		t.Errorf("combine args %s", got)
	}
}

// TestAttnPlan sweeps shapes: the splits cover the visible keys, are
// whole chunks, fit the workspace and shared memory, and decode gets
// enough blocks when the keys allow.
func TestAttnPlan(t *testing.T) {
	for _, T := range []int{1, 2, 8, 100} {
		for _, S := range []int{1, 31, 300, 4096, 40000} {
			for _, hg := range [][2]int{{1, 1}, {32, 8}, {16, 16}, {64, 4}} {
				for _, Dh := range []int{8, 64, 80, 128, 160, 256} {
					for _, window := range []int{0, 100} {
						if T > S {
							continue
						}
						H, G, pos0 := hg[0], hg[1], S-T
						g := attnPlan(T, S, H, G, Dh, pos0, window, 132, AttentionWorkspaceBytes)
						span := pos0 + T - g.kbase
						what := name("T", T, "S", S, "H", H, "G", G, "Dh", Dh, "window", window)
						switch {
						case g.nsplit < 1 || g.splitLen%g.kc != 0 || g.nsplit*g.splitLen < span || (g.nsplit-1)*g.splitLen >= span:
							t.Errorf("%s: %d splits of %d keys for %d keys", what, g.nsplit, g.splitLen, span)
						case g.shared > 48<<10:
							t.Errorf("%s: %d bytes of shared memory", what, g.shared)
						case g.nsplit > 1 && int64(T*H*(Dh+2)*4*g.nsplit) > AttentionWorkspaceBytes:
							t.Errorf("%s: %d splits overflow the workspace", what, g.nsplit)
						case g.nw < 1 || g.nw > attMaxWarps || g.qblocks*g.nw < T*H/G:
							t.Errorf("%s: %d blocks of %d warps for %d queries", what, g.qblocks, g.nw, T*H/G)
						case window > 0 && g.kbase != max(0, pos0-window+1):
							t.Errorf("%s: kbase %d", what, g.kbase)
						}
						if T == 1 && span >= 2*attMinSplitKeys*264 && g.qblocks*G*g.nsplit < 264 {
							t.Errorf("%s: only %d blocks for decode", what, g.qblocks*G*g.nsplit)
						}
					}
				}
			}
		}
	}
}

func TestGemvPlan(t *testing.T) {
	for _, wt := range []cuda.DataType{cuda.F32, cuda.BF16} {
		for _, rows := range []int{1, 2, 3, 5, 9, 16, 40} {
			for _, Kd := range []int{1, 30, 64, 1000, 1408, 4096, 16384} {
				g := gemvPlan(wt, 3, rows, 1000, Kd)
				what := name("w", wt, "rows", rows, "Kd", Kd)
				step := 32 * g.v
				switch {
				case g.m < min(rows, 16) || g.m > 16:
					t.Errorf("%s: M=%d", what, g.m)
				case g.kt < step || g.kt%step != 0 || g.shared != g.m*g.kt*4 || g.shared > gemvSharedBytes:
					t.Errorf("%s: KT=%d step %d shared %d", what, g.kt, step, g.shared)
				case g.v > 1 && Kd*wt.Size()%16 != 0:
					t.Errorf("%s: 16-byte loads on rows of %d bytes", what, Kd*wt.Size())
				case g.grid.X*gemvWarps*gemvNR < 1000 || g.grid.Y != 3:
					t.Errorf("%s: grid %v", what, g.grid)
				}
			}
		}
	}
}

func name(kv ...any) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%v=%v", kv[i], kv[i+1])
	}
	return b.String()
}
