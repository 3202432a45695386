package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/moesys/moesys/offload"
)

// loggedStore records the reads of a policy's store, for the disk probe
// to replay.
type loggedStore struct {
	offload.Store

	mu  sync.Mutex
	log []readRec // the reads since the last take, in the order they started
}

// readRec is one read of a loggedStore.
type readRec struct {
	off int64
	n   int
}

// take returns the reads logged since the last take and clears the log.
func (t *loggedStore) take() []readRec {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.log
	t.log = nil
	return l
}

func (t *loggedStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	t.mu.Lock()
	t.log = append(t.log, readRec{off, len(dst)})
	t.mu.Unlock()
	return t.Store.ReadAt(ctx, dst, off)
}

// Close does not close the store under it, which is shared.
func (t *loggedStore) Close() error { return nil }

// diskProbe measures how fast a store delivers the expert blocks a policy
// read, read as the scheduler reads them: the reads of the policy's last
// decode step, replayed (the same offsets and sizes, in the same order),
// depth in flight. Its replays run side by side with the policies' decode
// steps (an alternate side step), so its figure is the disk's over the same
// seconds and on the same blocks: this virtual disk's speed drifts between
// about 0.8 and 2.4 GB/s over minutes, and the host serves blocks read
// recently faster (as every policy's step here reads what the policy
// beside it read one turn before; random blocks of the file measured 0.2
// GB/s in a spell when the runs' own read 0.85).
type diskProbe struct {
	reader *offload.Reader
	mem    offload.HostMemory
	region []byte // depth slots
	slot   int64
	depth  int
	probe  offload.ReadProbe // accumulated
}

func newDiskProbe(lay *offload.Layout, store *offload.FileStore, depth int) (*diskProbe, error) {
	p := &diskProbe{depth: depth, slot: lay.SlotBytes()}
	var err error
	if p.region, err = p.mem.Alloc(depth * int(p.slot)); err != nil {
		return nil, err
	}
	p.reader = offload.NewReader(store, offload.ReaderConfig{Depth: depth})
	p.probe = offload.ReadProbe{Chunk: p.slot, Depth: depth, Direct: store.Direct(), Note: store.Note()}
	return p, nil
}

// replay reads recs, depth in flight, adding to the figure.
func (p *diskProbe) replay(ctx context.Context, recs []readRec) error {
	pend := make([]*offload.Pending, 0, len(recs))
	// Waits are without ctx: every read ends, and a buffer is not reused
	// while the reader owns it.
	wait := func(pd *offload.Pending) error { return pd.Wait(context.Background()) }
	var err error
	var bytes int64
	start := time.Now()
	for i, r := range recs {
		if i >= p.depth {
			if err = wait(pend[i-p.depth]); err != nil {
				break
			}
		}
		if int64(r.n) > p.slot {
			err = fmt.Errorf("a read of %d bytes, over a slot's %d", r.n, p.slot)
			break
		}
		buf := p.region[int64(i%p.depth)*p.slot:]
		pend = append(pend, p.reader.Submit(ctx, offload.Request{Dst: buf[:r.n], Off: r.off}))
		bytes += int64(r.n)
	}
	for _, pd := range pend {
		err = errors.Join(err, wait(pd))
	}
	if err != nil {
		return fmt.Errorf("disk probe: %w", err)
	}
	p.probe.Seconds += time.Since(start).Seconds()
	p.probe.Bytes += bytes
	p.probe.Reads += len(recs)
	return nil
}

func (p *diskProbe) Close() error {
	return errors.Join(p.reader.Close(), p.mem.Free(p.region))
}

// disk measures pregated, ondemand and prefetch-all on the experts file
// read with O_DIRECT, each at its planner minimum (ondemand at
// pregated's), against the bound the disk sets: its bandwidth at the
// queue depth the policy keeps, measured side by side with the policy's
// steps, over the bytes the policy read per token.
func (b offloadBench) disk(ctx context.Context, bm *benchModel, progress io.Writer) ([]benchResult, error) {
	store, err := offload.OpenFileStore(bm.lay.Path)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	if !store.Direct() {
		fmt.Fprintf(progress, "offload: warning: %s\n", store.Note())
	}
	ds, err := offload.OpenDiskStat(bm.lay.Path)
	if err != nil {
		fmt.Fprintf(progress, "offload: warning: %v: the disk bounds use the reader's busy time instead of the device's\n", err)
		ds = nil
	}
	var res []benchResult
	for _, batch := range b.batches {
		r, err := b.diskBatch(ctx, bm, store, ds, batch, progress)
		res = append(res, r...)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func (b offloadBench) diskBatch(ctx context.Context, bm *benchModel, store *offload.FileStore, ds *offload.DiskStat, batch int, progress io.Writer) ([]benchResult, error) {
	W := min(batch*bm.cfg.K, bm.cfg.E) // one block's experts
	preSlots, err := bm.minSlots(offload.Pregated, batch)
	if err != nil {
		return nil, err
	}
	allSlots, err := bm.minSlots(offload.PrefetchAll, batch)
	if err != nil {
		return nil, err
	}
	pre := &policyRun{policy: offload.Pregated, slots: preSlots}
	ond := &policyRun{policy: offload.OnDemand, slots: preSlots}
	all := &policyRun{policy: offload.PrefetchAll, slots: allSlots}
	prs := []*policyRun{pre, ond, all}
	// One probe per policy, at the most reads the policy keeps in flight:
	// ondemand and pregated one block's W (pregated's next block's reads
	// start as this block's end: SchedulerConfig.AheadDepth);
	// prefetch-all the reader's depth.
	depth := map[offload.Policy]int{offload.OnDemand: min(W, offload.DefaultDepth),
		offload.Pregated: min(W, offload.DefaultDepth), offload.PrefetchAll: offload.DefaultDepth}
	probes := map[offload.Policy]*diskProbe{}
	for _, pr := range prs {
		if probes[pr.policy], err = newDiskProbe(bm.lay, store, depth[pr.policy]); err != nil {
			break
		}
	}
	for _, pr := range prs {
		if err != nil {
			break
		}
		pr.io, pr.disk = &loggedStore{Store: store}, ds
		pr.src, err = bm.open(ctx, pr.io, pr.policy, batch, pr.slots)
	}
	// Each step's side turn replays, on each policy's probe, the reads of
	// that policy's last step, in alternating order (the second replay
	// reads blocks the first just read).
	flip := false
	if err == nil {
		err = bm.alternate(ctx, "disk", []*policyRun{pre, ond}, batch, b.prompt, b.decode, b.rounds,
			func(ctx context.Context) error {
				first, second := pre, ond
				if flip = !flip; flip {
					first, second = ond, pre
				}
				return errors.Join(probes[first.policy].replay(ctx, first.lastStep), probes[second.policy].replay(ctx, second.lastStep))
			}, progress)
	}
	// Prefetch-all last, alone: it leaves reads in flight after each
	// step, and its steps take seconds.
	if err == nil {
		err = bm.alternate(ctx, "disk", []*policyRun{all}, batch, b.prompt, b.slowDecode, 1,
			func(ctx context.Context) error { return probes[all.policy].replay(ctx, all.lastStep) }, progress)
	}
	err = errors.Join(err, closePolicies(prs))
	for _, p := range probes {
		if p != nil {
			err = errors.Join(err, p.Close())
		}
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "offload: disk read beside the b%d runs (their reads replayed): pregated's %s; ondemand's %s; prefetch-all's %s\n",
		batch, probes[offload.Pregated].probe, probes[offload.OnDemand].probe, probes[offload.PrefetchAll].probe)
	suffix := ""
	if batch > 1 {
		suffix = fmt.Sprintf("_b%d", batch)
	}
	var res []benchResult
	for _, pr := range prs {
		d, p := medianRun(pr.runs), probes[pr.policy].probe
		name := fmt.Sprintf("offload_%s_%s_disk%s", policyName(pr.policy), bm.label, suffix)
		// The bound: the disk's bandwidth at the queue depth this run kept,
		// measured on its own reads (the device's bytes over its busy time
		// during the run's steps; the reader's where the kernel's counters
		// cannot be read), over the bytes read per token (the device's
		// during the steps: prefetch-all's reads run on past a step's end).
		// The ratio is then the share of the run the disk was kept busy.
		bw, how, perToken := 0.0, "", d.readPerToken()
		if d.devOK && d.dev.Busy > 0 {
			bw = float64(d.dev.ReadBytes) / d.dev.Busy.Seconds()
			perToken = float64(d.dev.ReadBytes) / float64(d.tokens)
			how = fmt.Sprintf("%s (kernel accounting): %.0f MB read in %.3f s busy, %.0f%% of the run", ds, float64(d.dev.ReadBytes)/1e6, d.dev.Busy.Seconds(), 100*d.dev.Busy.Seconds()/d.seconds)
		} else if d.counts.Busy > 0 {
			bw = float64(d.counts.BytesRead) / d.counts.Busy.Seconds()
			how = fmt.Sprintf("the reader's accounting: %.0f MB read in %.3f s with a read in flight, %.0f%% of the run", float64(d.counts.BytesRead)/1e6, d.counts.Busy.Seconds(), 100*d.counts.Busy.Seconds()/d.seconds)
		}
		bound := bw / perToken
		r := benchResult{Name: name + "_ratio", Value: d.tokS(), Unit: "tokens/s", Bound: bound, Ratio: d.tokS() / bound,
			Note: fmt.Sprintf("batch %d, %d decode tokens, %s; bound = the disk's bandwidth at the queue depth the run kept (at most %d reads in flight), on the run's own reads: %.2f GB/s (%s) / %.1f MB read per token (the scheduler's count: %.1f); the same reads replayed beside the runs at %d in flight: %.2f GB/s; MoE block %.1f ms; stalled %.0f%%; peak expert memory %s",
				batch, d.tokens, directNote(p), d.counts.PeakInFlight, bw/1e9, how, perToken/1e6, d.readPerToken()/1e6,
				p.Depth, p.BytesPerSecond()/1e9, ms(d.block), 100*d.stall(), d.memory())}
		if pr.policy == offload.Pregated && batch == 1 {
			r.Target = 0.85
		}
		rb := p.BytesPerSecond() / d.readPerToken()
		replay := benchResult{Name: name + "_replay_ratio", Value: d.tokS(), Unit: "tokens/s", Bound: rb, Ratio: d.tokS() / rb,
			Note: fmt.Sprintf("the same run against a second bound: its reads replayed beside the runs (each decode step's, one turn later, %d in flight): %.2f GB/s / %.1f MB per token (this disk serves the same blocks at speeds that differ by 2x from one turn to the next)",
				p.Depth, p.BytesPerSecond()/1e9, d.readPerToken()/1e6)}
		res = append(res, r, replay, blockResult(name+"_block_ms", d))
	}
	return res, nil
}

func directNote(p offload.ReadProbe) string {
	if p.Direct {
		return "O_DIRECT"
	}
	return "page cache: " + p.Note
}
