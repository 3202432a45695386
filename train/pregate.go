package train

import (
	"context"
	"fmt"

	"github.com/moesys/moesys/model"
)

// ConvertPregate returns a pre-gated copy of a conventional model: the
// same weights, and for each MoE layer i that routes MoE layer i+dist, a
// pre-gate initialised from that layer's gate (the Pre-gated MoE paper's
// starting point: the pre-gate first computes exactly the next gate's
// function, on the current block's input). Gates of the layers now routed by
// pre-gates are dropped. maxT is the longest sequence the copy will see.
func ConvertPregate(src *model.Net, dist, maxT int) (*model.Net, error) {
	if src.Cfg.PregateDist != 0 {
		return nil, fmt.Errorf("%w: the model is already pre-gated (distance %d)", ErrOptions, src.Cfg.PregateDist)
	}
	cfg := *src.Cfg
	cfg.PregateDist = dist
	cfg.Arch = "moesys"
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dst, err := model.NewNet(&cfg, maxT)
	if err != nil {
		return nil, err
	}
	srcSpec, dstSpec := model.SpecFor(src.Cfg.Arch), model.SpecFor(cfg.Arch)
	for l := 0; l < cfg.L; l++ {
		if t := cfg.PregateTarget(l); t >= 0 {
			copy(dst.Param(dstSpec.Pregate(l)).W, src.Param(srcSpec.Router(t)).W)
		}
	}
	// Every other tensor keeps its name (moesys uses Mixtral's names).
	for _, p := range dst.Params {
		if q := src.Param(p.Name); q != nil {
			copy(p.W, q.W)
		} else if !isPregate(&cfg, p.Name) {
			return nil, fmt.Errorf("%w: converting: no tensor %s in the source model", ErrCheckpoint, p.Name)
		}
	}
	return dst, nil
}

func isPregate(c *model.Config, name string) bool {
	sp := model.SpecFor(c.Arch)
	for l := 0; l < c.L; l++ {
		if c.PregateTarget(l) >= 0 && sp.Pregate(l) == name {
			return true
		}
	}
	return false
}

// Agreement compares a pre-gated model's routing with the conventional
// model it came from, over the same validation tokens, on the MoE layers
// that pre-gates route.
type Agreement struct {
	Layers   int     `json:"layers"`    // MoE layers routed by pre-gates
	Tokens   int     `json:"tokens"`    // token-layer pairs compared
	ExactSet float64 `json:"exact_set"` // share of token-layers with the same top-k expert set
	Overlap  float64 `json:"overlap"`   // mean |A ∩ B| / K over token-layers
	ValOrig  float64 `json:"val_loss_original"`
	ValConv  float64 `json:"val_loss_pregated"`
}

// RoutingAgreement runs both models on the validation batches and compares
// their routing (see Agreement).
func RoutingAgreement(ctx context.Context, orig, conv *model.Net, val []ValBatch, T int) (Agreement, error) {
	var a Agreement
	c := conv.Cfg
	K := c.K
	var lossO, lossC float64
	var n int
	for _, l := range c.MoELayers() {
		if c.RouteSource(l) >= 0 {
			a.Layers++
		}
	}
	oldO, oldC := orig.Recompute, conv.Recompute
	trO, trC := orig.Train, conv.Train
	orig.Recompute, conv.Recompute = false, false // RoutingIDs needs each layer's activations
	orig.Train, conv.Train = false, false
	defer func() {
		orig.Recompute, conv.Recompute = oldO, oldC
		orig.Train, conv.Train = trO, trC
	}()
	for _, vb := range val {
		lo, err := orig.Forward(ctx, vb.Inputs, vb.Targets, vb.Rows, T, 0)
		if err != nil {
			return a, err
		}
		lc, err := conv.Forward(ctx, vb.Inputs, vb.Targets, vb.Rows, T, 0)
		if err != nil {
			return a, err
		}
		lossO += lo.CE * float64(lo.Tokens)
		lossC += lc.CE * float64(lc.Tokens)
		n += lo.Tokens
		for _, l := range c.MoELayers() {
			if c.RouteSource(l) < 0 {
				continue
			}
			ro, rc := orig.RoutingIDs(l), conv.RoutingIDs(l)
			for t := 0; t < vb.Rows*T; t++ {
				common := 0
				for _, x := range ro[t*K : (t+1)*K] {
					for _, y := range rc[t*K : (t+1)*K] {
						if x == y {
							common++
						}
					}
				}
				if common == K {
					a.ExactSet++
				}
				a.Overlap += float64(common) / float64(K)
				a.Tokens++
			}
		}
	}
	if a.Tokens > 0 {
		a.ExactSet /= float64(a.Tokens)
		a.Overlap /= float64(a.Tokens)
	}
	if n > 0 {
		a.ValOrig, a.ValConv = lossO/float64(n), lossC/float64(n)
	}
	return a, nil
}

// NewTrainerFrom builds a Trainer around an existing model (for example a
// converted one) with fresh optimizer state.
func NewTrainerFrom(o Options, corpus *Corpus, net *model.Net) (*Trainer, error) {
	o.Model = net.Cfg
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := corpus.Check(o.Seq); err != nil {
		return nil, err
	}
	return newTrainer(o, corpus, net, nil, nil)
}
