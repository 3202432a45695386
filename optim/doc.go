// Package optim holds the training loop's optimiser pieces: AdamW over a
// set of parameters (decoupled weight decay, bias correction, PyTorch
// semantics, per-parameter no-decay), global gradient-norm clipping, and
// learning-rate schedules (linear warmup then cosine decay). The per-element
// update is kernel.AdamW; this package owns the state and the bookkeeping.
//
//	opt := optim.NewAdamW(params, optim.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1})
//	sched := optim.WarmupCosine{Peak: 3e-4, Min: 3e-5, Warmup: 100, Total: 10000}
//	norm := optim.ClipGradNorm(params, 1.0)
//	opt.Step(sched.LR(opt.Steps()))
package optim
