package kernel

// Row reductions shared by the norm, softmax and loss kernels: float32 with
// four independent partial sums (unrolled by four) so the adds pipeline, then
// combined pairwise. For n terms the rounding error grows like √(n/4)·ε in
// practice; the kernels that sum very long rows (softmax, cross-entropy) use
// float64 partial sums instead. The loops are written `for len(x) >= 4 {…;
// x = x[4:]}` so the compiler proves every index in bounds.

// rowSum returns Σ x[i].
func rowSum(x []float32) float32 {
	var s0, s1, s2, s3 float32
	for len(x) >= 4 {
		s0 += x[0]
		s1 += x[1]
		s2 += x[2]
		s3 += x[3]
		x = x[4:]
	}
	for _, v := range x {
		s0 += v
	}
	return (s0 + s1) + (s2 + s3)
}

// rowSumSq returns Σ x[i]².
func rowSumSq(x []float32) float32 {
	var s0, s1, s2, s3 float32
	for len(x) >= 4 {
		s0 += x[0] * x[0]
		s1 += x[1] * x[1]
		s2 += x[2] * x[2]
		s3 += x[3] * x[3]
		x = x[4:]
	}
	for _, v := range x {
		s0 += v * v
	}
	return (s0 + s1) + (s2 + s3)
}

// rowSumSqDev returns Σ (x[i]−c)², the second pass of a two-pass variance.
func rowSumSqDev(x []float32, c float32) float32 {
	var s0, s1, s2, s3 float32
	for len(x) >= 4 {
		d0, d1, d2, d3 := x[0]-c, x[1]-c, x[2]-c, x[3]-c
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
		x = x[4:]
	}
	for _, v := range x {
		d := v - c
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// rowDot returns Σ x[i]·y[i]; len(y) ≥ len(x).
func rowDot(x, y []float32) float32 {
	var s0, s1, s2, s3 float32
	for len(x) >= 4 && len(y) >= 4 {
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		x, y = x[4:], y[4:]
	}
	y = y[:len(x)]
	for i, v := range x {
		s0 += v * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// rowMax returns the largest x[i]; len(x) ≥ 1. If x holds a NaN the result is
// unspecified (NaN or the maximum of some elements): the callers (softmax,
// cross-entropy) compute x[i]−max for every i, so a NaN poisons their row
// either way, as in PyTorch.
func rowMax(x []float32) float32 {
	m0 := x[0]
	m1, m2, m3 := m0, m0, m0
	for len(x) >= 4 {
		if x[0] > m0 {
			m0 = x[0]
		}
		if x[1] > m1 {
			m1 = x[1]
		}
		if x[2] > m2 {
			m2 = x[2]
		}
		if x[3] > m3 {
			m3 = x[3]
		}
		x = x[4:]
	}
	for _, v := range x {
		if v > m0 {
			m0 = v
		}
	}
	if m1 > m0 {
		m0 = m1
	}
	if m2 > m0 {
		m0 = m2
	}
	if m3 > m0 {
		m0 = m3
	}
	return m0
}
