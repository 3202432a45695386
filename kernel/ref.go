package kernel

// The *_ref.go files hold the naive twin of every optimised kernel: plain
// loops in the textbook order, accumulating in float64, written to be
// obviously correct rather than fast. Tests hold each fast kernel to its twin
// on random shapes, and check each backward twin against finite differences of
// its forward twin run in float64.
//
// The exported twins (RMSNormRef, SoftmaxRef, GemmRef, ...) take float32
// slices like the kernels they mirror; most wrap a generic body over refFloat
// so that the float64 instantiation serves the gradient checks. Unlike the
// kernels, twins may allocate scratch.

// refFloat is the element type of a generic reference body.
type refFloat interface{ ~float32 | ~float64 }
