package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moesys/moesys/offload"
)

// mapExperts maps an experts file read-only with every page read in,
// holding it in the page cache while mapped: the pages a simulated link's
// pageStore maps into slots come from RAM, so the link alone sets the
// transfer time. unmap releases it.
func mapExperts(path string) (data []byte, unmap func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err = unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return data, func() error { return unix.Munmap(data) }, nil
}

// simLink is a simulated link's setup: the experts file in RAM (the page
// cache, held by a mapping), a store delivering it into slots without a
// copy (mem), and the link bandwidth, once chosen.
type simLink struct {
	data  []byte
	unmap func() error
	mem   *pageStore
	gbps  float64
}

// link returns a link of its own for one scheduler over mem: policies
// compared side by side do not queue behind each other's transfers. It is
// not closed (it holds nothing; closing it would close mem).
func (s *simLink) link() *offload.SimLink { return offload.NewSimLink(s.mem, s.gbps, 0) }

func openSim(lay *offload.Layout, progress io.Writer) (*simLink, error) {
	t := time.Now()
	data, unmap, err := mapExperts(lay.Path)
	if err != nil {
		return nil, err
	}
	mem, err := openPageStore(lay.Path)
	if err != nil {
		return nil, errors.Join(err, unmap())
	}
	fmt.Fprintf(progress, "offload: %s of experts in RAM for the simulated link (%.1f s)\n", humanBytes(int64(len(data))), time.Since(t).Seconds())
	return &simLink{data: data, unmap: unmap, mem: mem}, nil
}

// pageStore is the simulated link's source: a Store that "reads" a block
// of the experts file by mapping the file's cached pages over the slot
// (private, read-only, page tables filled at once), so a transfer costs
// the link's delay and a few hundred microseconds of page-table work,
// where a copy out of RAM would take a core for milliseconds per expert
// and as much memory bandwidth as the decode itself. Every slot filled
// through it stays read-only and must only ever be filled through it
// (each fill maps over the last); slots must be page-aligned host memory
// (offload.HostMemory), as blocks are.
type pageStore struct{ f *os.File }

func openPageStore(path string) (*pageStore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &pageStore{f: f}, nil
}

func (s *pageStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	p := unsafe.Pointer(unsafe.SliceData(dst))
	if uintptr(p)%offload.Align != 0 || len(dst)%offload.Align != 0 || off%offload.Align != 0 {
		return fmt.Errorf("page store: read of %d bytes at %d into %p: %w", len(dst), off, p, offload.ErrAlign)
	}
	if _, err := unix.MmapPtr(int(s.f.Fd()), off, p, uintptr(len(dst)), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_FIXED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("page store: map %d bytes at %d: %w", len(dst), off, err)
	}
	return nil
}

func (s *pageStore) Close() error { return s.f.Close() }

// Close closes the store and unmaps the file.
func (s *simLink) Close() error { return errors.Join(s.mem.Close(), s.unmap()) }

// sim runs the paper regime on the pre-gated simE model: a link whose
// bandwidth makes one expert's transfer take one MoE block's compute
// (measured first on the resident model: a decode step's time over its MoE
// blocks, the window in which block N+1's experts can arrive while block N
// and the dense layer after it compute), then resident, pregated and
// ondemand alternating at pregated's minimum budget, and prefetch-all
// once. It returns the link's bandwidth.
func (b offloadBench) sim(ctx context.Context, bm *benchModel, progress io.Writer) ([]benchResult, float64, error) {
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return nil, 0, err
	}
	prs, res, gbps, err := b.simRuns(ctx, bm, sl, progress)
	err = errors.Join(err, closePolicies(prs), sl.Close())
	return res, gbps, err
}

func (b offloadBench) simRuns(ctx context.Context, bm *benchModel, sl *simLink, progress io.Writer) ([]*policyRun, []benchResult, float64, error) {
	resident := &policyRun{policy: offload.Resident, slots: len(bm.lay.Blocks)}
	prs := []*policyRun{resident}
	var err error
	// Resident reads every expert once, at open, from RAM: no link.
	if resident.src, err = bm.open(ctx, sl.mem, offload.Resident, 1, resident.slots); err != nil {
		return prs, nil, 0, err
	}
	calib, err := bm.calibrate(ctx, resident.src, b.prompt, b.decode, b.rounds, progress)
	if err != nil {
		return prs, nil, 0, err
	}
	block := calib.seconds / float64(calib.tokens) / float64(bm.moeLayers())
	slot := bm.lay.SlotBytes()
	sl.gbps = float64(slot) / block / 1e9
	fmt.Fprintf(progress, "offload: resident %s decodes %.1f tokens/s: %.2f ms per MoE block; simulated link %.2f GB/s moves one expert (%s) in that time\n",
		bm.label, calib.tokS(), 1000*block, sl.gbps, humanBytes(slot))
	res := []benchResult{{Name: "offload_sim_link_gbps", Value: sl.gbps, Unit: "GB/s",
		Note: fmt.Sprintf("chosen so one %s expert (%s) crosses the simulated link in one MoE block's compute, %.2f ms (resident %s decode step %.2f ms, median of %d runs, / %d MoE blocks), as transfer and compute compare in the Pre-gated MoE paper (A100, PCIe 4; this disk is ~20x slower); %s",
			bm.label, humanBytes(slot), 1000*block, bm.label, 1000/calib.tokS(), b.rounds, bm.moeLayers(), b.simNote())}}

	preSlots, err := bm.minSlots(offload.Pregated, 1)
	if err != nil {
		return prs, res, sl.gbps, err
	}
	allSlots, err := bm.minSlots(offload.PrefetchAll, 1)
	if err != nil {
		return prs, res, sl.gbps, err
	}
	pre := &policyRun{policy: offload.Pregated, slots: preSlots}
	ond := &policyRun{policy: offload.OnDemand, slots: preSlots}
	all := &policyRun{policy: offload.PrefetchAll, slots: allSlots}
	for _, pr := range []*policyRun{pre, ond, all} {
		if pr.src, err = bm.open(ctx, sl.link(), pr.policy, 1, pr.slots); err != nil {
			return prs, res, sl.gbps, err
		}
		prs = append(prs, pr)
	}
	if err := bm.alternate(ctx, "sim", []*policyRun{resident, pre, ond}, 1, b.prompt, b.decode, b.rounds, nil, progress); err != nil {
		return prs, res, sl.gbps, err
	}
	if err := bm.alternate(ctx, "sim", []*policyRun{all}, 1, b.prompt, b.slowDecode, 1, nil, progress); err != nil {
		return prs, res, sl.gbps, err
	}
	dr, dp, do, da := medianRun(resident.runs), medianRun(pre.runs), medianRun(ond.runs), medianRun(all.runs)
	at := fmt.Sprintf("batch 1, link %.2f GB/s, %d decode tokens (medians of %d rounds, each step run once per policy in turn), both at pregated's minimum budget %s", sl.gbps, dp.tokens, b.rounds, dp.memory())
	res = append(res,
		benchResult{Name: fmt.Sprintf("offload_pregated_vs_ondemand_%s_sim", bm.label), Value: dp.tokS(), Unit: "tokens/s", Bound: do.tokS(), Ratio: dp.tokS() / do.tokS(), Target: 1.5,
			Note: fmt.Sprintf("pregated tokens/s over ondemand's (the bound), %s; stalled %.0f%% vs %.0f%%", at, 100*dp.stall(), 100*do.stall())},
		benchResult{Name: fmt.Sprintf("offload_pregated_vs_resident_%s_sim", bm.label), Value: dp.tokS(), Unit: "tokens/s", Bound: dr.tokS(), Ratio: dp.tokS() / dr.tokS(), Target: 0.75,
			Note: fmt.Sprintf("pregated tokens/s over resident's (every expert in memory, %s), same alternation; the first MoE block of each token reads its expert serially (stalled %.0f%%)", dr.memory(), 100*dp.stall())},
		benchResult{Name: fmt.Sprintf("offload_prefetchall_vs_pregated_%s_sim", bm.label), Value: da.tokS(), Unit: "tokens/s", Bound: dp.tokS(), Ratio: da.tokS() / dp.tokS(),
			Note: fmt.Sprintf("prefetch-all tokens/s (%d decode tokens, run after the others) over pregated's; expert memory %s, %.0f MB moved per token", da.tokens, da.memory(), da.readPerToken()/1e6)},
		memoryResult(bm.label, dp),
	)
	for _, pr := range prs {
		res = append(res, blockResult(fmt.Sprintf("offload_%s_%s_sim_block_ms", policyName(pr.policy), bm.label), medianRun(pr.runs)))
	}
	return prs, res, sl.gbps, nil
}

// memoryResult is pregated's peak expert memory against twice the most
// experts one block activated (the paper's claim: only two blocks'
// activated experts need be resident).
func memoryResult(label string, d runStats) benchResult {
	bound := float64(2*d.maxActive) * float64(d.plan.SlotBytes) / (1 << 20)
	return benchResult{Name: fmt.Sprintf("offload_pregated_memory_%s_sim", label), Value: float64(d.plan.Bytes()) / (1 << 20), Unit: "MiB",
		Bound: bound, Ratio: float64(d.plan.Bytes()) / (1 << 20) / bound, Target: 1, TargetMax: true,
		Note: fmt.Sprintf("peak expert memory (%d slots, allocated whole at open) over 2 x the most experts one block activated (%d) x %s", d.plan.Slots, d.maxActive, humanBytes(d.plan.SlotBytes))}
}

// simPrefetchAll compares prefetch-all with pregated on the bigE model
// over the link of gbps (chosen on the simE model, whose experts and
// blocks are the same size: the bigE model is not run resident, which
// would hold every expert twice in RAM).
func (b offloadBench) simPrefetchAll(ctx context.Context, bm *benchModel, gbps float64, progress io.Writer) ([]benchResult, error) {
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return nil, err
	}
	sl.gbps = gbps
	preSlots, err := bm.minSlots(offload.Pregated, 1)
	if err != nil {
		return nil, errors.Join(err, sl.Close())
	}
	allSlots, err := bm.minSlots(offload.PrefetchAll, 1)
	if err != nil {
		return nil, errors.Join(err, sl.Close())
	}
	pre := &policyRun{policy: offload.Pregated, slots: preSlots}
	all := &policyRun{policy: offload.PrefetchAll, slots: allSlots}
	prs := []*policyRun{pre, all}
	for _, pr := range prs {
		if pr.src, err = bm.open(ctx, sl.link(), pr.policy, 1, pr.slots); err != nil {
			break
		}
	}
	if err == nil {
		err = bm.alternate(ctx, "sim", []*policyRun{pre}, 1, b.prompt, b.decode, b.rounds, nil, progress)
	}
	if err == nil {
		err = bm.alternate(ctx, "sim", []*policyRun{all}, 1, b.prompt, b.slowDecode, 1, nil, progress)
	}
	if err = errors.Join(err, closePolicies(prs), sl.Close()); err != nil {
		return nil, err
	}
	dp, da := medianRun(pre.runs), medianRun(all.runs)
	return []benchResult{
		{Name: fmt.Sprintf("offload_prefetchall_vs_pregated_%s_sim", bm.label), Value: da.tokS(), Unit: "tokens/s", Bound: dp.tokS(), Ratio: da.tokS() / dp.tokS(),
			Target: 0.1, TargetMax: true,
			Note: fmt.Sprintf("prefetch-all tokens/s over pregated's, batch 1, link %.2f GB/s (chosen on %s); prefetch-all moves %.0f MB per token in %s of slots, pregated %.1f MB in %s",
				gbps, expertLabel(b.simE), da.readPerToken()/1e6, humanBytes(da.plan.Bytes()), dp.readPerToken()/1e6, humanBytes(dp.plan.Bytes()))},
		memoryResult(bm.label, dp),
		blockResult(fmt.Sprintf("offload_pregated_%s_sim_block_ms", bm.label), dp),
		blockResult(fmt.Sprintf("offload_prefetchall_%s_sim_block_ms", bm.label), da),
	}, nil
}
