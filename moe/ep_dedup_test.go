package moe

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/moesys/moesys/dist"
)

// The deduplicated dispatch over a dist.Hier delivers exactly what the
// flat exchange delivers (bit for bit, same offsets), for several node
// shapes (including a placement that is not node-major), top-1 to top-3,
// dropped assignments and ranks without tokens; the combine and the
// backward dispatch after it agree too; and each token crosses to a node
// once, whatever number of its experts live there.
func TestEPDedupMatchesFlat(t *testing.T) {
	const D = 3
	cases := []struct {
		W, E, perNode int
		strided       bool // node = r % nodes instead of r / perNode
	}{
		{4, 8, 2, false}, {4, 8, 2, true}, {4, 8, 1, false}, {4, 8, 4, false}, {8, 16, 2, false}, {6, 12, 3, true}, {1, 4, 1, false},
	}
	for _, tc := range cases {
		for K := 1; K <= 3; K++ {
			t.Run(fmt.Sprintf("W%d_E%d_P%d_strided%v_K%d", tc.W, tc.E, tc.perNode, tc.strided, K), func(t *testing.T) {
				testDedup(t, tc.W, tc.E, tc.perNode, tc.strided, K, D)
			})
		}
	}
}

func testDedup(t *testing.T, W, E, perNode int, strided bool, K, D int) {
	flat, err := dist.NewLocal(W)
	if err != nil {
		t.Fatal(err)
	}
	world, err := dist.NewLocal(W)
	if err != nil {
		t.Fatal(err)
	}
	nodes := W / perNode
	errs := make([]error, W)
	var wg sync.WaitGroup
	for r := range W {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					errs[r] = fmt.Errorf("panic: %v", p)
				}
			}()
			errs[r] = dedupRank(r, W, E, K, D, nodes, perNode, strided, flat[r], world[r])
		})
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
	}
}

func dedupRank(r, W, E, K, D, nodes, perNode int, strided bool, flatC, worldC dist.Comm) error {
	ctx := context.Background()
	node, local := r/perNode, r%perNode
	if strided {
		node, local = r%nodes, r/nodes
	}
	h, err := dist.NewHierNodes(ctx, worldC, node, local)
	if err != nil {
		return err
	}
	defer h.Close()
	rng := rand.New(rand.NewPCG(uint64(r), uint64(E*K)))
	T := []int{7, 0, 12, 5, 9, 3, 1, 8}[r]
	ids := make([]int32, T*K)
	ws := make([]float32, T*K)
	for t := range T {
		for k, e := range rng.Perm(E)[:K] {
			ids[t*K+k], ws[t*K+k] = int32(e), 1
		}
	}
	limits := make([]int, E)
	for e := range limits {
		limits[e] = rng.IntN(T*K/2 + 2) // some assignments dropped
	}
	p := NewPlanLimits(Routing{T: T, K: K, IDsTK: ids, WeightsTK: ws}, E, limits)
	x := make([]float32, T*D)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	rows := make([]float32, p.Rows()*D)
	Dispatch(rows, x, p, K, D)

	a, err := NewEP(flatC, E)
	if err != nil {
		return err
	}
	b, err := NewEP(h, E)
	if err != nil {
		return err
	}
	if b.dd == nil {
		return fmt.Errorf("EP over a Hier has no deduplication")
	}
	ra, oa, err := a.Send(ctx, Forward, rows, &p, D)
	if err != nil {
		return err
	}
	rb, ob, err := b.Send(ctx, Forward, rows, &p, D)
	if err != nil {
		return err
	}
	if !slices.Equal(oa, ob) {
		return fmt.Errorf("offsets %v, flat %v", ob, oa)
	}
	if !slices.Equal(words(ra), words(rb)) {
		return fmt.Errorf("received rows differ from the flat dispatch's:\n%v\n%v", rb, ra)
	}
	// Each token goes once to each node holding any of its kept experts.
	El := E / W
	want := make([]int64, nodes)
	for t := range T {
		seen := map[int]bool{}
		for k := range K {
			if p.SlotRow[t*K+k] < 0 {
				continue
			}
			o := int(ids[t*K+k]) / El
			n := o / perNode
			if strided {
				n = o % nodes
			}
			seen[n] = true
		}
		for n := range seen {
			want[n]++
		}
	}
	for n := range nodes {
		if got := b.dd.hdr[2*n]; got != want[n] {
			return fmt.Errorf("%d tokens sent to node %d, want %d (one per token with experts there)", got, n, want[n])
		}
	}
	// The combine and the backward dispatch, which take Hier's two-level
	// path, agree with the flat ones.
	back := make([]float32, len(ra))
	for i := range back {
		back[i] = 2*ra[i] + 1
	}
	ya, yb := make([]float32, len(rows)), make([]float32, len(rows))
	if err := a.Return(ctx, ya, back, &p, D); err != nil {
		return err
	}
	if err := b.Return(ctx, yb, back, &p, D); err != nil {
		return err
	}
	if !slices.Equal(words(ya), words(yb)) {
		return fmt.Errorf("combined rows differ from the flat combine's")
	}
	for i := range ya {
		if ya[i] != 2*rows[i]+1 {
			return fmt.Errorf("combine of the dispatch is not its inverse at %d: %v, want %v", i, ya[i], 2*rows[i]+1)
		}
	}
	ga, _, err := a.Send(ctx, Backward, ya, &p, D)
	if err != nil {
		return err
	}
	gb, _, err := b.Send(ctx, Backward, yb, &p, D)
	if err != nil {
		return err
	}
	if !slices.Equal(words(ga), words(gb)) {
		return fmt.Errorf("backward dispatch differs from the flat one's")
	}
	return nil
}
