package moe

import (
	"context"
	"fmt"
	"time"

	"github.com/moesys/moesys/dist"
)

// EP is the Exchange of expert parallelism over a dist.Comm: the E experts
// of a layer are sharded over the W ranks in contiguous blocks, rank r
// owning experts [r*El, (r+1)*El), El = E/W; a Layer using it holds only
// those El experts' weights. Send is the dispatch: the ranks exchange how
// many rows each sends to each expert (an all-to-all of E counts), then
// the rows themselves (AllToAllV; a rank's rows for one destination are
// contiguous, since the plan groups rows by global expert); the received
// rows, which arrive grouped by sender, are regrouped by local expert
// (senders in rank order within each expert). Return is the combine, the
// same in reverse. Backward mirrors forward through the same two calls.
//
// One EP serves one layer (it keeps the split of its last Send for the
// Return after it) and is used by one goroutine. It keeps receive buffers
// per Role, so the rows received in forward stay valid through backward.
type EP struct {
	Comm dist.Comm
	E    int // experts of the layer, a multiple of Comm.Size()

	recv    [roles][]float32 // Send's received rows per role, by local expert
	offs    [roles][]int     // their local expert offsets (El+1)
	arrived []float32        // rows as they arrive, grouped by sender (scratch)
	split   epSplit          // of the last Send
	lim     limitBufs
	dd      *dedup  // the forward dispatch's node-level deduplication (Comm is a *dist.Hier)
	cnt     []int64 // the counts exchange with dedup headers: El+2 per rank, sent and received
	busy    time.Duration
}

// epSplit is how the last Send's rows were divided.
type epSplit struct {
	D      int
	counts []int64 // recv counts: counts[s*El+le] rows from rank s for local expert le
	sendN  []int   // elements sent to each rank
	recvN  []int   // elements received from each rank
	offs   []int   // local expert offsets (El+1), rows
	sent   []int64 // this rank's per-expert row counts (E)
	each   []int   // El per rank: the counts exchange's counts
	starts []int   // arrival-order row of counts[s*El+le]'s first row
}

// limitBufs are Limits' buffers.
type limitBufs struct {
	mine, all []int64
}

var (
	_ Exchange        = (*EP)(nil)
	_ CapacityLimiter = (*EP)(nil)
)

// NewEP returns the EP of a layer with e experts over c.
func NewEP(c dist.Comm, e int) (*EP, error) {
	if e < 1 || e%c.Size() != 0 {
		return nil, fmt.Errorf("moe: expert parallelism: %d experts over %d ranks: the experts must divide evenly", e, c.Size())
	}
	x := &EP{Comm: c, E: e}
	if h, ok := c.(*dist.Hier); ok {
		x.dd = newDedup(h)
	}
	return x, nil
}

// LocalExperts returns the first global expert this rank owns and how many.
func (x *EP) LocalExperts() (first, n int) {
	n = x.E / x.Comm.Size()
	return x.Comm.Rank() * n, n
}

// Busy returns the time spent in Send, Return and Limits so far: the
// layer's communication, which its caller waits for.
func (x *EP) Busy() time.Duration { return x.busy }

// Send implements Exchange.
func (x *EP) Send(ctx context.Context, role Role, rows []float32, p *Plan, D int) ([]float32, []int, error) {
	defer x.timed(time.Now())
	W := x.Comm.Size()
	if role >= roles {
		return nil, nil, fmt.Errorf("moe: expert parallelism: dispatch role %d", role)
	}
	if p.E != x.E || x.E%W != 0 {
		return nil, nil, fmt.Errorf("moe: expert parallelism over %d ranks: plan of %d experts, layer of %d", W, p.E, x.E)
	}
	El := x.E / W
	sp := &x.split
	sp.D = D
	sp.sent = resize(sp.sent, x.E)
	for e := range x.E {
		sp.sent[e] = int64(p.Offsets[e+1] - p.Offsets[e])
	}
	// Counts: El to each rank, El from each.
	sp.counts, sp.each = resize(sp.counts, W*El), resize(sp.each, W)
	for r := range W {
		sp.each[r] = El
	}
	dd := x.dd
	if role != Forward || p.K < 1 {
		dd = nil
	}
	if dd == nil {
		if err := dist.AllToAllVOf(ctx, x.Comm, sp.sent, sp.each, sp.counts, sp.each); err != nil {
			return nil, nil, fmt.Errorf("moe: dispatch counts: %w", err)
		}
	} else if err := x.countsDedup(ctx, rows, p, D); err != nil {
		return nil, nil, err
	}
	sp.sendN, sp.recvN = resize(sp.sendN, W), resize(sp.recvN, W)
	for r := range W {
		sp.sendN[r] = (p.Offsets[(r+1)*El] - p.Offsets[r*El]) * D
		n := 0
		for le := range El {
			n += int(sp.counts[r*El+le])
		}
		sp.recvN[r] = n * D
	}
	x.offs[role] = resize(x.offs[role], El+1)
	sp.offs = x.offs[role]
	sp.offs[0] = 0
	for le := range El {
		n := 0
		for s := range W {
			n += int(sp.counts[s*El+le])
		}
		sp.offs[le+1] = sp.offs[le] + n
	}
	sp.starts = resize(sp.starts, W*El)
	at := 0
	for i, n := range sp.counts {
		sp.starts[i] = at
		at += int(n)
	}
	Rl := sp.offs[El]
	if dd != nil {
		x.recv[role] = resize(x.recv[role], Rl*D)
		if err := dd.dispatch(ctx, x, x.recv[role], D); err != nil {
			return nil, nil, err
		}
		return x.recv[role], sp.offs, nil
	}
	x.arrived, x.recv[role] = resize(x.arrived, Rl*D), resize(x.recv[role], Rl*D)
	if err := dist.AllToAllVOf(ctx, x.Comm, rows[:p.Rows()*D], sp.sendN, x.arrived, sp.recvN); err != nil {
		return nil, nil, fmt.Errorf("moe: dispatch rows: %w", err)
	}
	x.regroup(x.recv[role], x.arrived, false)
	return x.recv[role], sp.offs, nil
}

// countsDedup is the counts exchange of a deduplicated dispatch: to each
// rank its El counts and two header words, which for the rank with this
// local rank on node n' are the tokens and list words of the stage 1
// message to n' (else zero). It packs those messages, fills sp.counts and
// the headers received.
func (x *EP) countsDedup(ctx context.Context, rows []float32, p *Plan, D int) error {
	d, sp := x.dd, &x.split
	W := x.Comm.Size()
	El := x.E / W
	N, _ := d.h.Nodes()
	myLocal := d.h.Node.Rank()
	d.pack(x, rows, p, D)
	x.cnt = resize(x.cnt, 2*W*(El+2))
	out, in := x.cnt[:W*(El+2)], x.cnt[W*(El+2):]
	each := resize(sp.each, W)
	for r := range W {
		each[r] = El + 2
		o := out[r*(El+2) : (r+1)*(El+2)]
		copy(o, sp.sent[r*El:(r+1)*El])
		o[El], o[El+1] = 0, 0
		if d.localOf[r] == myLocal {
			n := d.nodeOf[r]
			o[El], o[El+1] = d.hdr[2*n], d.hdr[2*n+1]
		}
	}
	if err := dist.AllToAllVOf(ctx, x.Comm, out, each, in, each); err != nil {
		return fmt.Errorf("moe: dispatch counts: %w", err)
	}
	d.hdrIn = resize(d.hdrIn, 2*N)
	for s := range W {
		i := in[s*(El+2) : (s+1)*(El+2)]
		copy(sp.counts[s*El:(s+1)*El], i[:El])
		if d.localOf[s] == myLocal {
			n := d.nodeOf[s]
			d.hdrIn[2*n], d.hdrIn[2*n+1] = i[El], i[El+1]
		}
	}
	for r := range W {
		each[r] = El
	}
	return nil
}

// regroup moves rows between the arrival order (sender-major: for each
// sender s, its rows for local experts 0..El-1) and the local-expert order
// (for each local expert, its rows from senders 0..W-1); back reverses it.
func (x *EP) regroup(byExpert, bySender []float32, back bool) {
	sp := &x.split
	W, D := x.Comm.Size(), sp.D
	El := x.E / W
	row := 0 // row in local-expert order
	for le := range El {
		for s := range W {
			n := int(sp.counts[s*El+le])
			a := sp.starts[s*El+le]
			if back {
				copy(bySender[a*D:(a+n)*D], byExpert[row*D:(row+n)*D])
			} else {
				copy(byExpert[row*D:(row+n)*D], bySender[a*D:(a+n)*D])
			}
			row += n
		}
	}
}

// Return implements Exchange: recv (in local-expert order, as the last
// Send returned it) goes back to the senders, into rows in p's order.
func (x *EP) Return(ctx context.Context, rows, recv []float32, p *Plan, D int) error {
	defer x.timed(time.Now())
	sp := &x.split
	if D != sp.D || sp.offs == nil {
		return fmt.Errorf("moe: combine without its dispatch (D %d, dispatched %d)", D, sp.D)
	}
	Rl := sp.offs[len(sp.offs)-1]
	x.arrived = resize(x.arrived, Rl*D)
	x.regroup(recv, x.arrived, true)
	if err := dist.AllToAllVOf(ctx, x.Comm, x.arrived, sp.recvN, rows[:p.Rows()*D], sp.sendN); err != nil {
		return fmt.Errorf("moe: combine rows: %w", err)
	}
	return nil
}

// Limits implements CapacityLimiter: the ranks gather every rank's token
// count and per-expert demand (one AllGather of E+1 counts), and rank r's
// limit for expert e is what is left of e's capacity after ranks 0..r-1's
// demand, at most its own.
func (x *EP) Limits(ctx context.Context, want []int, T, K int, cf float64, limits []int) error {
	defer x.timed(time.Now())
	W, E := x.Comm.Size(), x.E
	if len(want) != E || len(limits) != E {
		return fmt.Errorf("moe: capacity limits: %d demands and %d limits for %d experts", len(want), len(limits), E)
	}
	b := &x.lim
	b.mine, b.all = resize(b.mine, E+1), resize(b.all, W*(E+1))
	b.mine[0] = int64(T)
	for e, n := range want {
		b.mine[e+1] = int64(n)
	}
	if err := dist.AllGatherOf(ctx, x.Comm, b.mine, b.all); err != nil {
		return fmt.Errorf("moe: capacity limits: %w", err)
	}
	var total int64
	for r := range W {
		total += b.all[r*(E+1)]
	}
	c := int64(Capacity(cf, int(total), K, E))
	me := x.Comm.Rank()
	for e := range E {
		left := c
		for r := range me {
			left -= b.all[r*(E+1)+e+1]
		}
		limits[e] = int(max(0, min(left, int64(want[e]))))
	}
	return nil
}

func (x *EP) timed(start time.Time) { x.busy += time.Since(start) }

// resize returns s with length n, reallocated only when it must grow.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
