package kernel

import (
	"fmt"
	"math"
)

// AdamW applies one step of torch.optim.AdamW (amsgrad=False, maximize=False,
// the single-tensor/foreach algorithm) to param in place, updating the moment
// estimates m and v:
//
//	param *= 1 − lr·wd
//	m      = lerp(m, grad, 1−β1)            (= β1·m + (1−β1)·grad)
//	v      = β2·v + (1−β2)·grad²
//	param += −(lr/bc1) · m / (sqrt(v)/sqrt(bc2) + eps),   bc_i = 1 − β_i^step
//
// step counts from 1 (the first update is step 1). The scalars (1 − lr·wd,
// 1−β1, 1−β2, lr/bc1, sqrt(bc2)) are computed in float64 and rounded to
// float32 once, as PyTorch does with its Python-float hyperparameters; the
// per-element arithmetic is float32 in PyTorch's operation order (lerp's
// two-sided formula, addcmul, addcdiv), so results match PyTorch's CPU
// kernels to about an ulp. Each product is rounded before the sum it feeds
// (explicit conversions stop Go fusing them into FMAs on GOAMD64=v3 and
// arm64), so every tier gives the same bits: the C kernels (mk_adamw,
// mk2_adamw) repeat the loop with true sqrt and division. Shapes: param, grad,
// m, v (n), n = len(param). The caller owns the step counter (per parameter
// group).
func AdamW(param, grad, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	n := len(param)
	if len(grad) < n || len(m) < n || len(v) < n || step < 1 {
		panic(fmt.Sprintf("kernel.AdamW: n=len(param)=%d step=%d need step ≥ 1, len(grad), len(m), len(v) ≥ n; have grad %d, m %d, v %d",
			n, step, len(grad), len(m), len(v)))
	}
	grad, m, v = grad[:n], m[:n], v[:n]
	decay := float32(1 - float64(lr)*float64(weightDecay))
	w1 := float32(1 - float64(beta1)) // lerp weight
	c2 := float32(1 - float64(beta2))
	bc1 := 1 - math.Pow(float64(beta1), float64(step))
	bc2 := 1 - math.Pow(float64(beta2), float64(step))
	negStep := float32(-float64(lr) / bc1)
	bc2Sqrt := float32(math.Sqrt(bc2))
	// torch.lerp(m, g, w) is m + w·(g−m) for |w| < 0.5, else g − (g−m)·(1−w).
	lerpLow := w1 < 0.5 && w1 > -0.5
	if useNative() && n >= nativeMinElems {
		nativeAdamW(param, grad, m, v, decay, w1, lerpLow, beta2, c2, negStep, bc2Sqrt, eps)
		return
	}
	omw1 := 1 - w1
	for i, p := range param {
		g := grad[i]
		p *= decay
		mi := m[i]
		if lerpLow {
			mi += float32(w1 * (g - mi))
		} else {
			mi = g - float32((g-mi)*omw1)
		}
		vi := float32(v[i]*beta2) + float32(c2*g*g)
		denom := float32(math.Sqrt(float64(vi)))/bc2Sqrt + eps
		m[i], v[i] = mi, vi
		param[i] = p + float32(negStep*(mi/denom))
	}
}
