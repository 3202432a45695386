package kernels

import (
	"embed"
	"fmt"
	"strings"

	"github.com/moesys/moesys/gpu/cuda"
)

//go:embed prelude.cuh *.cu
var sourceFS embed.FS

// sourceFiles are concatenated in this order after the ACT_BF16 define.
var sourceFiles = []string{"prelude.cuh", "norm.cu", "rope.cu", "elementwise.cu", "route.cu", "attention.cu", "gemv.cu"}

// Source returns the CUDA C translation unit that Load compiles for
// activations of type act (F32 or BF16): "#define ACT_BF16 0|1", then
// prelude.cuh and the .cu files. It needs no headers.
func Source(act cuda.DataType) (string, error) {
	if act != cuda.F32 && act != cuda.BF16 {
		return "", fmt.Errorf("kernels: activation type %v: want f32 or bf16: %w", act, ErrUnsupported)
	}
	var b strings.Builder
	flag := 0
	if act == cuda.BF16 {
		flag = 1
	}
	fmt.Fprintf(&b, "#define ACT_BF16 %d\n", flag)
	for _, f := range sourceFiles {
		text, err := sourceFS.ReadFile(f)
		if err != nil {
			panic("kernels: embedded source missing: " + f) // a build bug
		}
		fmt.Fprintf(&b, "// ---- %s ----\n", f)
		b.Write(text)
		b.WriteString("\n")
	}
	return b.String(), nil
}

// Names returns the name of every kernel Source defines (each an extern
// "C" __global__ function), in a fixed order. Load resolves all of them.
func Names() []string {
	names := []string{
		"rmsnorm_f32", "rmsnorm_act", "rope",
		"embed_f32", "embed_bf16", "add_bias", "swiglu", "kv_append", "gather", "combine",
		"sigmoid_gate_add", "cast_f32_bf16", "cast_bf16_f32", "copy_u16", "copy_u32",
		"softmax_topk", "attn_split", "attn_combine",
	}
	for _, w := range []string{"bf16", "f32"} {
		for _, v := range []string{"v", "s"} {
			for _, m := range gemvRowBuckets {
				names = append(names, gemvName(w, v, m))
			}
		}
	}
	return names
}
