package moe

// AuxStats accumulates router statistics over MoE layers for the auxiliary
// losses, defined as Hugging Face's load_balancing_loss_func defines them:
// the router logits of all MoE layers and all tokens are concatenated into
// N rows, and
//
//	balance = E/N^2 * sum_e C_e * P_e
//
// with C_e the number of (row, top-k slot) choices of expert e and P_e the
// sum over rows of the router probability of e (the Switch Transformer loss,
// summed over the K slots). The router z-loss is the mean over the N rows
// of logsumexp(logits)^2 (ST-MoE).
type AuxStats struct {
	E       int
	N       int       // rows added
	Count   []float64 // (E)
	ProbSum []float64 // (E)
	LSE2    float64   // sum of squared logsumexps
}

// NewAuxStats returns empty statistics for E experts.
func NewAuxStats(E int) *AuxStats {
	return &AuxStats{E: E, Count: make([]float64, E), ProbSum: make([]float64, E)}
}

// Reset empties s.
func (s *AuxStats) Reset() {
	s.N, s.LSE2 = 0, 0
	clear(s.Count)
	clear(s.ProbSum)
}

// Add adds the rows of one layer's forward pass.
func (s *AuxStats) Add(act *Activations) {
	s.N += act.T
	for e := 0; e < s.E; e++ {
		s.Count[e] += act.Count[e]
		s.ProbSum[e] += act.ProbSum[e]
	}
	for _, v := range act.LSE[:act.T] {
		s.LSE2 += v * v
	}
}

// Balance returns the load-balancing loss (unscaled).
func (s *AuxStats) Balance() float64 {
	if s.N == 0 {
		return 0
	}
	var sum float64
	for e := 0; e < s.E; e++ {
		sum += s.Count[e] * s.ProbSum[e]
	}
	return float64(s.E) * sum / (float64(s.N) * float64(s.N))
}

// Z returns the router z-loss (unscaled).
func (s *AuxStats) Z() float64 {
	if s.N == 0 {
		return 0
	}
	return s.LSE2 / float64(s.N)
}

// Grad returns what Layer.Backward takes for the loss
// balanceCoef*Balance() + zCoef*Z(): the gradient with respect to every
// row's probability of e (dprob, E; the top-k counts are constants) and the
// z-loss scale. dprob is overwritten (allocated when nil).
func (s *AuxStats) Grad(dprob []float32, balanceCoef, zCoef float64) ([]float32, float64) {
	if dprob == nil {
		dprob = make([]float32, s.E)
	}
	if s.N == 0 {
		clear(dprob)
		return dprob, 0
	}
	n2 := float64(s.N) * float64(s.N)
	for e := 0; e < s.E; e++ {
		dprob[e] = float32(balanceCoef * float64(s.E) * s.Count[e] / n2)
	}
	return dprob, 2 * zCoef / float64(s.N)
}
