// Package moe holds the Mixture-of-Experts layer's parts as separate units
// that hand plain values to each other: the Router turns router logits into
// a Routing (top-k expert ids and combine weights per token); NewPlan turns a
// Routing into a Plan (the permutation that groups token copies by expert,
// per-expert counts and offsets); Dispatch gathers token rows into that
// order; the experts run as one grouped GEMM over the contiguous groups; and
// Combine scatters the expert outputs back, weighted. Dispatch followed by
// Combine with unit weights is the identity (a test holds it to that).
// Where the experts' weights are not resident, an ExpertSource (source.go,
// implemented by package offload) lends them to the layer between routing
// and combine: Acquire, compute, Release; a Prefetcher also takes hints of
// later layers' experts (a pre-gate's routing, or, for a Speculator, a
// prediction with the next layer's router) to fetch them while this layer
// computes.
//
//	r := moe.Router{K: 2, Normalize: true}
//	routing := r.Route(logitsTE, T, E)          // softmax, top-k, renormalise
//	plan := moe.NewPlan(routing, E, -1)          // -1: dropless
//	moe.Dispatch(routedND, xTD, plan, D)         // rows grouped by expert
//	// ... experts over plan.Offsets ...
//	moe.Combine(yTD, outND, plan, routing, D)    // y[t] += w * out[row]
package moe
