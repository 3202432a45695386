package kernel

import "math"

// CrossEntropyRef is the naive twin of CrossEntropy (float64 throughout).
func CrossEntropyRef(losses, lse, logits []float32, targets []int32, T, V int) {
	checkCrossEntropy("CrossEntropyRef", losses, lse, logits, targets, T, V)
	crossEntropyRef(losses, lse, logits, targets, T, V)
}

// CrossEntropyBackwardRef is the naive twin of CrossEntropyBackward (float64).
func CrossEntropyBackwardRef(dlogits, logits, lse []float32, targets []int32, dloss []float32, T, V int) {
	crossEntropyBackwardRef(dlogits, logits, lse, targets, dloss, T, V)
}

func crossEntropyRef[F refFloat](losses, lse, logits []F, targets []int32, T, V int) {
	for t := 0; t < T; t++ {
		m := math.Inf(-1)
		for j := 0; j < V; j++ {
			m = math.Max(m, float64(logits[t*V+j]))
		}
		sum := 0.0
		for j := 0; j < V; j++ {
			sum += math.Exp(float64(logits[t*V+j]) - m)
		}
		l := m + math.Log(sum)
		lse[t] = F(l)
		losses[t] = 0
		if y := targets[t]; y >= 0 {
			losses[t] = F(l - float64(logits[t*V+int(y)]))
		}
	}
}

func crossEntropyBackwardRef[F refFloat](dlogits, logits, lse []F, targets []int32, dloss []F, T, V int) {
	for t := 0; t < T; t++ {
		for j := 0; j < V; j++ {
			d := 0.0
			if y := int(targets[t]); y >= 0 {
				d = math.Exp(float64(logits[t*V+j]) - float64(lse[t]))
				if j == y {
					d--
				}
				d *= float64(dloss[t])
			}
			dlogits[t*V+j] = F(d)
		}
	}
}
