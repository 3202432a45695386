package train

import (
	"context"
	"testing"

	"github.com/moesys/moesys/model"
)

// mustStep is TrainStep that fails the test on an error.
func mustStep(t testing.TB, tr *Trainer) StepResult {
	t.Helper()
	r, err := tr.TrainStep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustAgree is RoutingAgreement that fails the test on an error.
func mustAgree(t testing.TB, orig, conv *model.Net, val []ValBatch, T int) Agreement {
	t.Helper()
	a, err := RoutingAgreement(context.Background(), orig, conv, val, T)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
