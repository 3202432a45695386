package kernel

import "math"

// AdamWRef is the naive twin of AdamW: the textbook update, every operation
// in float64 (state read from and rounded back to float32).
func AdamWRef(param, grad, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	adamWRef(param, grad, m, v, step, float64(lr), float64(beta1), float64(beta2), float64(eps), float64(weightDecay))
}

func adamWRef[F refFloat](param, grad, m, v []F, step int, lr, beta1, beta2, eps, wd float64) {
	bc1 := 1 - math.Pow(beta1, float64(step))
	bc2 := 1 - math.Pow(beta2, float64(step))
	for i := range param {
		p, g := float64(param[i]), float64(grad[i])
		p *= 1 - lr*wd
		mi := beta1*float64(m[i]) + (1-beta1)*g
		vi := beta2*float64(v[i]) + (1-beta2)*g*g
		p -= lr / bc1 * mi / (math.Sqrt(vi)/math.Sqrt(bc2) + eps)
		param[i], m[i], v[i] = F(p), F(mi), F(vi)
	}
}
