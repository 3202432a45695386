package kernel_test

import (
	"fmt"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/tensor"
)

// A Hugging Face Linear layer: y (T x N) = x (T x K) times W^T with W stored
// (N, K), as f32 and as bf16 weights pre-packed at load.
func ExampleGemm() {
	const T, K, N = 2, 3, 2
	x := []float32{1, 2, 3, 4, 5, 6}
	w := []float32{1, 0, 1, 0, 1, 0} // row n of W is output n's weights
	y := make([]float32, T*N)
	kernel.Gemm(false, true, T, N, K, 1, x, K, w, K, 0, y, N)
	fmt.Println(y)

	wb := make([]uint16, len(w))
	tensor.F32SliceToBF16(wb, w)
	packed := kernel.PackBF16(kernel.BF16Exact, true, K, N, wb, K)
	kernel.GemmPacked(false, T, 1, x, K, packed, 0, y, N)
	fmt.Println(y)
	// Output:
	// [4 2 10 5]
	// [4 2 10 5]
}

// Causal attention over a 3-token sequence with one head: the first token
// can only see itself, so its output is its own value vector.
func ExampleAttention() {
	const T, H, G, Dh = 3, 1, 1, 2
	q := []float32{1, 0, 0, 1, 1, 1}
	k := []float32{1, 0, 0, 1, 1, 1}
	v := []float32{10, 20, 30, 40, 50, 60}
	out := make([]float32, T*H*Dh)
	ws := make([]float32, kernel.AttentionWorkspace(T, T, H, G, Dh))
	kernel.Attention(out, nil, q, k, v, T, T, H, G, Dh, 0, 0, 1, ws)
	fmt.Printf("%.1f\n", out[:2])
	// Output: [10.0 20.0]
}
