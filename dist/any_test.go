package dist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// Any is true everywhere when one rank says true; Agree fails every rank
// when one fails, each with its own error where it has one.
func TestAnyAgree(t *testing.T) {
	const W = 3
	for failing := -1; failing < W; failing++ {
		t.Run(fmt.Sprint("failing", failing), func(t *testing.T) {
			comms, err := NewLocal(W)
			if err != nil {
				t.Fatal(err)
			}
			anys, agreed := make([]bool, W), make([]error, W)
			errs := make([]error, W)
			mine := errors.New("mine")
			var wg sync.WaitGroup
			for r := range W {
				wg.Go(func() {
					ctx := context.Background()
					if anys[r], errs[r] = Any(ctx, comms[r], r == failing); errs[r] != nil {
						return
					}
					var own error
					if r == failing {
						own = mine
					}
					agreed[r] = Agree(ctx, comms[r], "step", own)
				})
			}
			wg.Wait()
			for r := range W {
				if errs[r] != nil {
					t.Fatal(errs[r])
				}
				if anys[r] != (failing >= 0) {
					t.Fatalf("rank %d: Any = %v with rank %d true", r, anys[r], failing)
				}
				switch {
				case failing < 0 && agreed[r] != nil:
					t.Fatalf("rank %d: Agree = %v with no failure", r, agreed[r])
				case r == failing && agreed[r] != mine:
					t.Fatalf("rank %d: Agree = %v, want its own error", r, agreed[r])
				case failing >= 0 && agreed[r] == nil:
					t.Fatalf("rank %d: Agree succeeded though rank %d failed", r, failing)
				}
			}
		})
	}
}
