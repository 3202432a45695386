//go:build invariants

package offload

// invariants turns on the ownership checks of the slot pool: a double
// release, a release before a fill finished, a second fill, or closing the
// pool while slots are referenced panics. `make test` builds with the tag.
const invariants = true
