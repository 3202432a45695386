package kernel

import "fmt"

// minParallelGemv is the weight count below which a GEMV stays on one thread.
const minParallelGemv = 1 << 16

// Gemv computes y = alpha*W*x + beta*y for W (N x K, row stride ldw), the
// decode-time product of one token with a Hugging Face Linear weight. Rows of
// W are split over the pool (a parallel call allocates one small closure; a
// single-thread call nothing).
func Gemv(y []float32, w []float32, ldw int, x []float32, N, K int, alpha, beta float32) {
	checkGemv("Gemv", len(y), len(w), ldw, len(x), N, K)
	gemv(y, w, nil, ldw, x, N, K, alpha, beta)
}

// GemvBF16 is Gemv with W given as bf16 bit patterns, widened exactly to f32
// in registers: memory traffic is halved, results equal Gemv on the widened W
// up to summation order.
func GemvBF16(y []float32, w []uint16, ldw int, x []float32, N, K int, alpha, beta float32) {
	checkGemv("GemvBF16", len(y), len(w), ldw, len(x), N, K)
	gemv(y, nil, w, ldw, x, N, K, alpha, beta)
}

func gemv(y, wf []float32, wb []uint16, ldw int, x []float32, N, K int, alpha, beta float32) {
	if N == 0 {
		return
	}
	parts := 1
	if N*K >= minParallelGemv {
		parts = min(Threads(), N/8)
	}
	if parts <= 1 { // no closure: the single-thread path does not allocate
		gemvRows(y, wf, wb, ldw, x, 0, N, K, alpha, beta)
		return
	}
	parallel(parts, func(p int) {
		// Stripes of whole 8-row blocks (the native kernel's row group).
		n0 := N * p / parts / 8 * 8
		n1 := N * (p + 1) / parts / 8 * 8
		if p == parts-1 {
			n1 = N
		}
		gemvRows(y, wf, wb, ldw, x, n0, n1, K, alpha, beta)
	})
}

// gemvRows computes rows [n0, n1) of the GEMV on the current thread.
func gemvRows(y, wf []float32, wb []uint16, ldw int, x []float32, n0, n1, K int, alpha, beta float32) {
	if n0 >= n1 {
		return
	}
	if useNative() && K > 0 {
		if wb != nil {
			nativeGemv(y[n0:n1], ptr(wb[n0*ldw:]), true, ldw, x, n1-n0, K, alpha, beta)
		} else {
			nativeGemv(y[n0:n1], ptr(wf[n0*ldw:]), false, ldw, x, n1-n0, K, alpha, beta)
		}
		return
	}
	gemmGoRowsDot(y, wf, wb, ldw, x, n0, n1, K, alpha, beta)
}

// gemmGoRowsDot is the portable GEMV over rows [n0, n1).
func gemmGoRowsDot(y, wf []float32, wb []uint16, ldw int, x []float32, n0, n1, K int, alpha, beta float32) {
	for n := n0; n < n1; n++ {
		var s0, s1, s2, s3 float32
		k := 0
		if wb == nil {
			row := wf[n*ldw : n*ldw+K]
			for ; k+4 <= K; k += 4 {
				s0 += row[k] * x[k]
				s1 += row[k+1] * x[k+1]
				s2 += row[k+2] * x[k+2]
				s3 += row[k+3] * x[k+3]
			}
			for ; k < K; k++ {
				s0 += row[k] * x[k]
			}
		} else {
			row := wb[n*ldw : n*ldw+K]
			for ; k+4 <= K; k += 4 {
				s0 += bf16f(row[k]) * x[k]
				s1 += bf16f(row[k+1]) * x[k+1]
				s2 += bf16f(row[k+2]) * x[k+2]
				s3 += bf16f(row[k+3]) * x[k+3]
			}
			for ; k < K; k++ {
				s0 += bf16f(row[k]) * x[k]
			}
		}
		y[n] = scaleAdd(alpha*((s0+s1)+(s2+s3)), beta, y[n])
	}
}

func checkGemv(op string, ly, lw, ldw, lx, N, K int) {
	if N < 0 || K < 0 || ly < N || lx < K || (N > 0 && ldw < K) || lw < need(N, K, ldw) {
		panic(fmt.Sprintf("kernel.%s: bad shapes N=%d K=%d len(y)=%d len(w)=%d ldw=%d len(x)=%d", op, N, K, ly, lw, ldw, lx))
	}
}
