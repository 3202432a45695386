package moe

import (
	"context"

	"github.com/moesys/moesys/tensor"
)

// ExpertSource supplies the weights of routed experts to the MoE layers that
// run them, when the experts are not all resident: an offloading scheduler
// (package offload) that keeps them on a slow tier and moves them into a
// memory budget. A MoE layer routes its tokens, acquires the experts that
// got rows, computes, and releases them:
//
//	for len(active) > 0 {
//		n, err := src.Acquire(ctx, layer, active, w)
//		... // run experts active[:n] with the weights w[:n]
//		src.Release(w[:n])
//		active = active[n:]
//	}
//
// The two methods are all the layer needs; which experts are fetched ahead
// of time, and what stays cached after Release, is the source's policy. A
// source that can fetch ahead also implements Prefetcher.
//
// Acquire may hand out fewer experts than asked: a budget of S experts
// serves a batch whose tokens selected more than S by running them in turns.
// So that turns cannot deadlock on a shared budget, a caller releases
// everything it acquired from a source before it acquires again.
type ExpertSource interface {
	// Acquire makes experts of layer (distinct ids of a MoE layer) usable
	// and returns n >= 1 (for a non-empty experts): experts[:n] are
	// acquired and w[i] holds the weights of experts[i]. It waits for what
	// is not yet in memory, or for ctx. It may reorder experts in place
	// (to take those already in memory first); the rest, experts[n:], are
	// for the next call. w must have len(experts) elements. On error
	// nothing is acquired: wrong weights are never returned.
	Acquire(ctx context.Context, layer int, experts []int, w []ExpertWeights) (n int, err error)
	// Release gives back weights returned by Acquire, each once. Their
	// Data must not be used afterwards.
	Release(w []ExpertWeights)
}

// Prefetcher is implemented by an ExpertSource that can start fetching a
// layer's experts before they are acquired: the model calls Prefetch as soon
// as it knows a later layer's experts (a pre-gate computed that layer's
// routing one or more blocks early; or, for a Speculator, a prediction), so
// the fetch overlaps the blocks in between. The model sends the hints of
// block N once block N's first Acquire has taken its experts' memory and
// started their fetches — from AcquireThen's then, when the source is an
// AcquireThener, so the hints' fetches overlap N's own wait; else after
// Acquire returns — and before N's experts run: hints never take memory
// N's own experts need, and a source serves N's reads first. A
// hint only: it does not block (on I/O or for memory), gives the caller
// nothing to release, and a failed fetch is reported by the later Acquire;
// experts the hint named that the layer then does not use are the source's
// to drop, and experts it missed are acquired as usual. Policies that
// decide on their own what to fetch ahead (the next layer's experts, a ring
// of layers) or that fetch nothing ahead (on demand) may ignore hints.
// experts is the caller's, read only during the call.
type Prefetcher interface {
	Prefetch(ctx context.Context, layer int, experts []int)
}

// AcquireThener is a Prefetcher whose Acquire can run the caller's hints at
// the moment that serves them best. AcquireThen is Acquire, calling then
// (if not nil) once, after it has taken memory for the experts it hands
// out and started fetching the missing ones, and before it waits for them:
// hints sent from then take only the memory left, their fetches queue
// behind the layer's own, and a disk read for the next block starts while
// this block still waits for its experts (sent after Acquire returns, the
// next block's read could start only after this block's ended: a slow tier
// idle between reads). then does not run if Acquire fails before its
// fetches start; it must not call the source's Acquire.
type AcquireThener interface {
	Prefetcher
	AcquireThen(ctx context.Context, layer int, experts []int, w []ExpertWeights, then func()) (n int, err error)
}

// Speculator is a Prefetcher that also wants predictions for layers whose
// routing is not known ahead (checkpoints without pre-gates): when
// WantsPrediction returns true, the model applies the router of the next
// MoE layer after block N to block N's MoE input (the normed hidden state
// N's router sees), takes the top-K experts of each token, and passes
// their union to Prefetch for that layer, one block early. A
// misprediction costs time, never correctness: the layer acquires the
// experts its real routing chose. The model asks once, when the source is
// set.
type Speculator interface {
	Prefetcher
	WantsPrediction() bool
}

// ExpertWeights is one acquired expert: its tensors' bytes as the source
// holds them. Data and Tensors belong to the source: read-only for the
// caller, and Data is valid until Release.
type ExpertWeights struct {
	Layer, Expert int
	// Tensors describe the tensors in Data, in the order the source's
	// layout stores them (for a SwiGLU expert converted by moesys: gate,
	// up, down). Shared by every acquisition of the expert.
	Tensors []ExpertTensor
	// Data holds the tensors at their offsets, little-endian, starting on
	// a 4 KiB boundary; nil when the source's memory is a device's.
	Data []byte
	// Addr is the device address where Data would start, for a source
	// whose memory is a GPU's (the tensors at the same offsets); 0 for
	// host memory.
	Addr uint64
	// Ref is the source's handle for Release; the caller leaves it alone.
	Ref any
}

// ExpertTensor places one tensor of an expert in ExpertWeights.Data.
type ExpertTensor struct {
	Name   string       // the checkpoint's tensor name
	DType  tensor.DType // as stored; no conversion happens on the way
	Shape  []int        // row-major, e.g. (F, D) for a gate projection
	Offset int64        // bytes from the start of Data
	Bytes  int64        // elements * DType.Size()
}

// View returns the tensor's bytes within data, an ExpertWeights.Data.
func (t *ExpertTensor) View(data []byte) []byte { return data[t.Offset : t.Offset+t.Bytes] }
