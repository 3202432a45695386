package dist

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// The hierarchical all-to-all delivers exactly what the flat one does, for
// several node shapes and random (some empty) message sizes, with ranks
// placed node-major or given their nodes explicitly in another order.
func TestHierMatchesFlat(t *testing.T) {
	for _, tc := range []struct {
		W, perNode int
		scatter    bool // nodes given explicitly, round-robin placement
	}{{4, 2, false}, {6, 3, false}, {6, 2, true}, {4, 1, false}, {4, 4, false}} {
		t.Run(fmt.Sprintf("W%d-P%d-scatter%v", tc.W, tc.perNode, tc.scatter), func(t *testing.T) {
			W := tc.W
			comms, err := NewLocal(W)
			if err != nil {
				t.Fatal(err)
			}
			// counts[s][r]: bytes rank s sends rank r.
			rng := rand.New(rand.NewPCG(uint64(W), uint64(tc.perNode)))
			counts := make([][]int, W)
			for s := range counts {
				counts[s] = make([]int, W)
				for r := range counts[s] {
					if rng.IntN(4) > 0 {
						counts[s][r] = rng.IntN(50)
					}
				}
			}
			errs := make([]error, W)
			var wg sync.WaitGroup
			for me := range W {
				wg.Go(func() {
					errs[me] = func() error {
						ctx := context.Background()
						var h *Hier
						var err error
						if tc.scatter {
							nodes := W / tc.perNode
							h, err = NewHierNodes(ctx, comms[me], me%nodes, me/nodes)
						} else {
							h, err = NewHier(ctx, comms[me], tc.perNode)
						}
						if err != nil {
							return err
						}
						defer h.Close()
						sc, rc := counts[me], make([]int, W)
						ns, nr := 0, 0
						for r := range W {
							rc[r] = counts[r][me]
							ns += sc[r]
							nr += rc[r]
						}
						send := make([]byte, ns)
						for i := range send {
							send[i] = byte(me*31 + i)
						}
						flat, hier := make([]byte, nr), make([]byte, nr)
						for round := range 2 {
							if err := comms[me].AllToAllV(ctx, send, sc, flat, rc); err != nil {
								return err
							}
							if err := h.AllToAllV(ctx, send, sc, hier, rc); err != nil {
								return err
							}
							if !bytes.Equal(flat, hier) {
								return fmt.Errorf("round %d: hierarchical result differs from flat", round)
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
