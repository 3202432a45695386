package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/moesys/moesys/gpu"
	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

// deviceFlags choose the backend of generate and the GPU benchmarks.
type deviceFlags struct {
	device   string
	compute  string
	hostTier string
}

func (d *deviceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.device, "device", "cpu", "where the model runs: cpu, or cuda (an NVIDIA GPU; without one: a one-line notice and the CPU)")
	fs.StringVar(&d.compute, "compute", "bf16", "--device cuda: precision of weights, GEMM inputs and KV cache on the GPU: bf16 or f32")
	fs.StringVar(&d.hostTier, "host-tier", "pinned", "--device cuda with --offload: where experts wait for the GPU: pinned (experts.bin read once into pinned host RAM) or disk (read on demand through pinned bounce buffers)")
}

// check validates the flags before any work.
func (d *deviceFlags) check() error {
	switch d.device {
	case "cpu", "cuda":
	default:
		return fmt.Errorf("--device %q: want cpu or cuda", d.device)
	}
	if _, err := gpu.ParseCompute(d.compute); err != nil {
		return fmt.Errorf("--compute: %w", err)
	}
	switch d.hostTier {
	case "pinned", "disk":
	default:
		return fmt.Errorf("--host-tier %q: want pinned or disk", d.hostTier)
	}
	return nil
}

// seqRunner is one sequence on either backend.
type seqRunner interface {
	ForwardContext(ctx context.Context, tokens []int32) ([]float32, error)
	Position() int
	Close() error
}

type cpuSeq struct{ *model.Session }

func (s cpuSeq) Position() int { return s.Pos }
func (s cpuSeq) Close() error  { return nil }

type gpuSeq struct{ *gpu.Session }

func (s gpuSeq) Position() int { return s.Pos }

// gpuRun is a model opened on the GPU: resident, or offloaded with its
// scheduler's slots in device memory.
type gpuRun struct {
	b     *gpu.Backend
	g     *gpu.Model
	cfg   *model.Config
	off   *offloadRun // nil: resident
	close func() error
}

func (r *gpuRun) newSeq(maxT int) (seqRunner, error) {
	s, err := r.g.NewSession(maxT)
	if err != nil {
		return nil, err
	}
	return gpuSeq{s}, nil
}

// openGPU opens dir on the GPU as openModel does on the CPU. Where there is
// no GPU it prints gpu.Notice's line and returns nil: the caller runs on
// the CPU.
func openGPU(ctx context.Context, fs *flag.FlagSet, dir string, off *offloadFlags, d *deviceFlags, stderr io.Writer) (*gpuRun, error) {
	offloaded, err := off.offloaded(fs, dir)
	if err != nil {
		return nil, err
	}
	b, err := gpu.Open(gpu.Options{Compute: d.compute})
	if errors.Is(err, cuda.ErrUnavailable) {
		fmt.Fprintln(stderr, gpu.Notice(err))
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "gpu: %s\n", b.Describe())
	r := &gpuRun{b: b}
	fail := func(err error) (*gpuRun, error) {
		if r.close != nil {
			err = errors.Join(err, r.close())
		} else {
			err = errors.Join(err, b.Close())
		}
		return nil, err
	}
	var host *model.Model
	if offloaded {
		cfg, err := model.LoadConfig(dir)
		if err != nil {
			return fail(err)
		}
		scfg, or, err := planOffload(dir, cfg, off, 1)
		if err != nil {
			return fail(err)
		}
		if or.auto != "" {
			fmt.Fprintf(stderr, "offload policy %s\n", or.auto)
		}
		fmt.Fprintf(stderr, "offload plan (device memory): %s\n", or.plan)
		if host, err = model.LoadOffloaded(dir, nil); err != nil {
			return fail(err)
		}
		sched, closeSched, err := openGPUScheduler(ctx, b, dir, scfg, d.hostTier, stderr)
		if err != nil {
			return fail(errors.Join(err, host.Close()))
		}
		or.sched = sched
		r.off = or
		r.close = func() error { return errors.Join(closeSched(), b.Close()) }
	} else if host, err = model.Load(dir); err != nil {
		return fail(err)
	}
	r.cfg = host.Cfg
	g, err := gpu.Upload(b, host)
	// The weights are on the device: the host mapping can go.
	if cerr := host.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	r.g = g
	if r.off != nil {
		g.SetExpertSource(r.off.sched)
		r.off.open = r.off.sched.Stats().Snapshot()
		r.off.last = r.off.open
	}
	inner := r.close
	if inner == nil {
		inner = b.Close
	}
	r.close = func() error { return errors.Join(g.Close(), inner()) }
	fmt.Fprintf(stderr, "gpu: %s of weights on the device\n", offload.FormatBytes(g.WeightBytes()))
	return r, nil
}

// openGPUScheduler starts a scheduler whose slots are device memory, fed
// from pinned host RAM (hostTier "pinned") or from the experts file.
func openGPUScheduler(ctx context.Context, b *gpu.Backend, dir string, scfg offload.SchedulerConfig, hostTier string, stderr io.Writer) (*offload.Scheduler, func() error, error) {
	lay, err := offload.OpenLayout(dir)
	if err != nil {
		return nil, nil, err
	}
	var store offload.Store
	var freeStore func() error
	if hostTier == "pinned" {
		last := -1
		ms, free, err := b.PinnedStore(lay.Path, func(done, total int64) {
			if pct := int(100 * done / total); pct/10 != last/10 {
				last = pct
				fmt.Fprintf(stderr, "\rgpu: experts into pinned host memory %3d%%", pct)
			}
		})
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, nil, err
		}
		store, freeStore = ms, free
	} else {
		fs, err := offload.OpenFileStore(lay.Path)
		if err != nil {
			return nil, nil, err
		}
		store, freeStore = fs, fs.Close
	}
	for _, n := range b.Notices() {
		fmt.Fprintf(stderr, "gpu: %s\n", n)
	}
	scfg.Memory = gpu.NewDeviceSlots(b)
	sched, err := offload.NewScheduler(ctx, lay, store, scfg)
	if err != nil {
		return nil, nil, errors.Join(err, freeStore())
	}
	return sched, func() error { return errors.Join(sched.Close(), freeStore()) }, nil
}
