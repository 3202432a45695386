package model

import (
	"context"
	"testing"
)

// fwd is Net.Forward that fails the test on an error.
func fwd(t testing.TB, n *Net, ids, targets []int32, B, T int, step uint64) Loss {
	t.Helper()
	l, err := n.Forward(context.Background(), ids, targets, B, T, step)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// bwd is Net.Backward that fails the test on an error.
func bwd(t testing.TB, n *Net, scale float32) {
	t.Helper()
	if err := n.Backward(context.Background(), scale); err != nil {
		t.Fatal(err)
	}
}
