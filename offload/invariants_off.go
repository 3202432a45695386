//go:build !invariants

package offload

// invariants is off in normal builds: the ownership checks of the slot pool
// compile away (see invariants_on.go).
const invariants = false
