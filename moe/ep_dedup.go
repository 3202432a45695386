package moe

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/moesys/moesys/dist"
)

// The forward dispatch over a hierarchical communicator (dist.Hier) with
// node-level deduplication. A token routed to several experts that live on
// one node is a row repeated in the plan: the flat exchange, and Hier's
// two-level one, carry every copy across the link between nodes. Here a
// rank sends each token once to each node that has any of its experts:
//
//  1. Between nodes (Hier.Cross, the ranks with this local rank): to node
//     n', the tokens with a kept assignment on n', in token order, each
//     with the list of its experts there. The receiving rank on n' (with
//     the sender's local rank) is the tokens' proxy on that node.
//  2. Inside the node (Hier.Node): each proxy fans the tokens out to the
//     owners of their experts, each owner's rows grouped by source rank,
//     then expert, then token order: the source's plan order.
//
// The owner knows from the counts exchange how many rows each source
// sends each of its experts, so it places every arriving row where the
// flat exchange puts it: the result is byte for byte the flat one's. Only
// the forward dispatch repeats rows (the backward dispatch carries a
// weighted gradient per assignment, and the combines one result per
// assignment), so the other exchanges take Hier's plain two-level path.

// dedup is the state of the deduplicated dispatch: Hier's shape and the
// per-call buffers, kept to spare the dispatch its allocations.
type dedup struct {
	h           *dist.Hier
	nodeOf      []int // world rank -> node
	localOf     []int // world rank -> local rank
	rowExpert   []int32
	send, recv  []uint32 // stage 1 (between nodes)
	sc, rc      []int    // stage 1 counts (uint32 words) per node
	msgAt       []int    // stage 1: where each node's message starts
	hdr         []int64  // per node: tokens and list words sent (2N)
	hdrIn       []int64  // received from each node (2N)
	mark, lenAt []int    // pack: per node, the last token seen (+1) and its list length word
	list, row   []int    // pack: per node, the next list and row word
	own, far    fanout   // stage 2: this node's tokens, the other nodes'
}

// newDedup returns the dedup state for h, nil when h is nil.
func newDedup(h *dist.Hier) *dedup {
	if h == nil {
		return nil
	}
	N, P := h.Nodes()
	d := &dedup{h: h, nodeOf: make([]int, N*P), localOf: make([]int, N*P)}
	for n := range N {
		for l := range P {
			r := h.RankAt(n, l)
			d.nodeOf[r], d.localOf[r] = n, l
		}
	}
	return d
}

// words views a float32 slice as its bit patterns (no copy).
func words(f []float32) []uint32 {
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(f))), len(f))
}

// pack fills the per-node header this rank sends in the counts
// exchange (tokens and list words to each node) and packs the stage 1
// messages: for each node n', ascending, the list words (per token: its
// number of experts on n', then their global ids) followed by the token
// rows. rows are in p's order.
func (d *dedup) pack(x *EP, rows []float32, p *Plan, D int) {
	N, _ := d.h.Nodes()
	W := x.Comm.Size()
	El := x.E / W
	R := p.Rows()
	d.rowExpert = resize(d.rowExpert, R)
	for e := range p.E {
		for r := p.Offsets[e]; r < p.Offsets[e+1]; r++ {
			d.rowExpert[r] = int32(e)
		}
	}
	K := p.K
	T := len(p.SlotRow) / K
	d.hdr = resize(d.hdr, 2*N)
	clear(d.hdr)
	d.mark, d.lenAt = resize(d.mark, N), resize(d.lenAt, N)
	// First pass: sizes.
	clear(d.mark)
	for t := range T {
		for k := range K {
			row := p.SlotRow[t*K+k]
			if row < 0 {
				continue
			}
			n := d.nodeOf[int(d.rowExpert[row])/El]
			if d.mark[n] != t+1 {
				d.mark[n] = t + 1
				d.hdr[2*n]++   // a token
				d.hdr[2*n+1]++ // its list length word
			}
			d.hdr[2*n+1]++ // an expert id
		}
	}
	// The messages to other nodes in node order, then this node's (which
	// does not cross: the stage 1 counts to this node are zero).
	me := d.h.Cross.Rank()
	d.sc = resize(d.sc, N)
	d.msgAt = resize(d.msgAt, N)
	at := 0
	for n := range N {
		if n != me {
			d.msgAt[n] = at
			d.sc[n] = int(d.hdr[2*n+1]) + int(d.hdr[2*n])*D
			at += d.sc[n]
		}
	}
	d.msgAt[me], d.sc[me] = at, 0
	d.send = resize(d.send, at+int(d.hdr[2*me+1])+int(d.hdr[2*me])*D)
	// Second pass: fill. Per node, the list goes first, then the rows.
	d.list, d.row = resize(d.list, N), resize(d.row, N)
	list, row := d.list, d.row
	for n := range N {
		list[n] = d.msgAt[n]
		row[n] = d.msgAt[n] + int(d.hdr[2*n+1])
	}
	rw := words(rows)
	clear(d.mark)
	lenAt := d.lenAt // the word holding the token's list length on each node
	for t := range T {
		for k := range K {
			r := p.SlotRow[t*K+k]
			if r < 0 {
				continue
			}
			e := d.rowExpert[r]
			n := d.nodeOf[int(e)/El]
			if d.mark[n] != t+1 {
				d.mark[n] = t + 1
				lenAt[n] = list[n]
				d.send[list[n]] = 0
				list[n]++
				copy(d.send[row[n]:row[n]+D], rw[int(r)*D:(int(r)+1)*D])
				row[n] += D
			}
			d.send[lenAt[n]]++
			d.send[list[n]] = uint32(e)
			list[n]++
		}
	}
}

// dispatch runs the two stages into out (the received rows in
// local-expert order, as EP.Send returns them); x.split is already set by
// the counts exchange, hdrIn holds the headers received from each node.
// This rank's tokens for its own node do not wait for the exchange
// between nodes: their fan-out inside the node runs during it.
func (d *dedup) dispatch(ctx context.Context, x *EP, out []float32, D int) error {
	h := d.h
	N, _ := h.Nodes()
	me := h.Cross.Rank()

	// Stage 1 between nodes, and meanwhile the fan-out of this node's
	// tokens from every local rank.
	d.rc = resize(d.rc, N)
	in := 0
	for n := range N {
		d.rc[n] = 0
		if n != me {
			d.rc[n] = int(d.hdrIn[2*n+1]) + int(d.hdrIn[2*n])*D
		}
		in += d.rc[n]
	}
	d.recv = resize(d.recv, in)
	cross := make(chan error, 1)
	go func() {
		err := dist.AllToAllVOf(ctx, h.Cross, d.send[:d.msgAt[me]], d.sc, d.recv, d.rc)
		if err != nil {
			err = fmt.Errorf("moe: dispatch between nodes: %w", err)
		}
		cross <- err
	}()
	d.own.msgs = append(d.own.msgs[:0], msg{node: me, words: d.send[d.msgAt[me]:], tokens: int(d.hdr[2*me]), list: int(d.hdr[2*me+1])})
	errOwn := d.own.fanOut(ctx, d, x, out, D)
	if err := <-cross; err != nil {
		return err
	}
	if errOwn != nil {
		return errOwn
	}
	if N == 1 {
		return nil
	}
	// Stage 2: the other nodes' tokens that arrived, fanned out.
	d.far.msgs = d.far.msgs[:0]
	at := 0
	for n := range N {
		if n == me {
			continue
		}
		m := msg{node: n, tokens: int(d.hdrIn[2*n]), list: int(d.hdrIn[2*n+1])}
		m.words = d.recv[at : at+d.rc[n]]
		at += d.rc[n]
		d.far.msgs = append(d.far.msgs, m)
	}
	return d.far.fanOut(ctx, d, x, out, D)
}

// msg is a stage 1 message: from the rank with this local rank on node
// node, the list words (per token: its number of experts on this node,
// then their global ids), then the tokens' rows.
type msg struct {
	node         int
	words        []uint32
	tokens, list int
}

// fanout is one fan-out inside the node: the messages of some source
// nodes, each token row sent to the owners of its experts, and the rows
// the other local ranks send for the same source nodes placed in out.
type fanout struct {
	msgs       []msg
	bucket     []int // per (message, node expert): rows, then the next row to fill
	send, recv []uint32
	sc, rc     []int
}

// fanOut sends f's messages' rows to their experts' owners inside the
// node and places what arrives in out. To owner l the rows go grouped by
// message (source node ascending), then l's expert, then token order (the
// source's plan order); from each local rank l arrive the rows of the
// sources (n, l), n over the same nodes, in the same grouping.
func (f *fanout) fanOut(ctx context.Context, d *dedup, x *EP, out []float32, D int) error {
	h := d.h
	_, P := h.Nodes()
	W := x.Comm.Size()
	El := x.E / W
	sp := &x.split
	NE := P * El // this node's experts, numbered by owner local rank, then local expert
	slot := func(e int) int { return d.localOf[e/El]*El + e%El }
	M := len(f.msgs)
	f.bucket = resize(f.bucket, M*NE)
	clear(f.bucket)
	for i, m := range f.msgs {
		lst := m.words[:m.list]
		for j := 0; j < len(lst); {
			c := int(lst[j])
			for _, e := range lst[j+1 : j+1+c] {
				f.bucket[i*NE+slot(int(e))]++
			}
			j += 1 + c
		}
	}
	f.sc = resize(f.sc, P)
	pos := 0
	for l := range P {
		start := pos
		for i := range M {
			for le := range El {
				k := i*NE + l*El + le
				c := f.bucket[k]
				f.bucket[k] = pos
				pos += c
			}
		}
		f.sc[l] = (pos - start) * D
	}
	f.send = resize(f.send, pos*D)
	for i, m := range f.msgs {
		lst := m.words[:m.list]
		rows := m.words[m.list:]
		tok := 0
		for j := 0; j < len(lst); {
			c := int(lst[j])
			src := rows[tok*D : (tok+1)*D]
			for _, e := range lst[j+1 : j+1+c] {
				k := i*NE + slot(int(e))
				copy(f.send[f.bucket[k]*D:], src)
				f.bucket[k]++
			}
			j += 1 + c
			tok++
		}
	}
	f.rc = resize(f.rc, P)
	in := 0
	for l := range P {
		c := 0
		for _, m := range f.msgs {
			s := h.RankAt(m.node, l)
			for le := range El {
				c += int(sp.counts[s*El+le])
			}
		}
		f.rc[l] = c * D
		in += c * D
	}
	f.recv = resize(f.recv, in)
	if err := dist.AllToAllVOf(ctx, h.Node, f.send, f.sc, f.recv, f.rc); err != nil {
		return fmt.Errorf("moe: dispatch inside the node: %w", err)
	}
	// Place each block where the flat exchange puts it: local expert le,
	// then source rank s ascending.
	ow := words(out)
	at := 0
	for l := range P {
		for _, m := range f.msgs {
			s := h.RankAt(m.node, l)
			for le := range El {
				c := int(sp.counts[s*El+le])
				r := sp.offs[le]
				for q := range s {
					r += int(sp.counts[q*El+le])
				}
				copy(ow[r*D:(r+c)*D], f.recv[at:at+c*D])
				at += c * D
			}
		}
	}
	return nil
}
