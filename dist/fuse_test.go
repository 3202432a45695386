package dist

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// Fused all-reduce gives what one AllReduce per tensor gives (bit for bit:
// the same elements are summed in the same rank order), over several
// rounds, with tensors ready in any order and some larger than a bucket;
// and it packs small tensors into few collectives.
func TestFusedMatchesOneByOne(t *testing.T) {
	sizes := []int{3, 1, 40, 7, 7, 100, 2, 64, 65, 5, 300, 1, 1}
	const bucketBytes = 64 * 4
	for _, W := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("W", W), func(t *testing.T) {
			comms, err := NewLocal(W)
			if err != nil {
				t.Fatal(err)
			}
			fusedC, err := NewLocal(W) // the Fused's own communicator
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, W)
			var wg sync.WaitGroup
			for r := range W {
				wg.Go(func() {
					errs[r] = func() error {
						ctx := context.Background()
						rng := rand.New(rand.NewPCG(uint64(r), 9))
						var fused, plain [][]float32
						for _, n := range sizes {
							x := make([]float32, n)
							for i := range x {
								x[i] = float32(rng.NormFloat64())
							}
							fused, plain = append(fused, slices.Clone(x)), append(plain, x)
						}
						f := NewFused(fusedC[r], fused, bucketBytes)
						if f.Buckets() >= len(sizes) {
							return fmt.Errorf("%d tensors in %d buckets: nothing fused", len(sizes), f.Buckets())
						}
						for round := range 3 {
							f.Start(ctx)
							order := rand.New(rand.NewPCG(uint64(round), 1)).Perm(len(sizes)) // the same on every rank
							for _, i := range order {
								f.Ready(i)
							}
							if err := f.Wait(); err != nil {
								return err
							}
							for i, x := range plain {
								if err := comms[r].AllReduce(ctx, x); err != nil {
									return err
								}
								if !slices.Equal(fused[i], x) {
									return fmt.Errorf("round %d tensor %d: fused %v, one by one %v", round, i, fused[i], x)
								}
							}
						}
						return nil
					}()
				})
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
		})
	}
}

// A round whose tensors are not all ready fails instead of hanging.
func TestFusedNotReady(t *testing.T) {
	comms, err := NewLocal(1)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFused(comms[0], [][]float32{make([]float32, 4), make([]float32, 4)}, 4)
	f.Start(context.Background())
	f.Ready(1) // bucket 1 waits for bucket 0
	if err := f.Wait(); err == nil {
		t.Fatal("Wait with a tensor never ready succeeded")
	}
}
