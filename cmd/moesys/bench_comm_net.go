package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/train"
)

func init() {
	benchSuites["comm-net"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"fusion and hierarchy over MPI: fused vs one-by-one gradient all-reduce (2 ranks); hierarchical vs flat MoE dispatch on an emulated two-node cluster (network namespaces, 1 Gbit/s link, 2 ranks per node; root, iproute2)", benchCommNet}
}

const (
	netModeEnv = "MOESYS_BENCH_NET_MODE" // the worker's part: fusion or hier
	// The emulated cluster: two network namespaces joined by a veth pair
	// whose both ends tbf limits to netRate.
	netNS0, netNS1 = "moesys-bn0", "moesys-bn1"
	netVeth0       = "moesys-bv0"
	netVeth1       = "moesys-bv1"
	netSubnet      = "10.231.77.0/24"
	netRate        = "1gbit"
	netPerNode     = 2 // ranks per emulated node (the hostfile's slots)
	fusedTarget    = 2.0
	hierTarget     = 1.3
)

// benchCommNet runs both parts, each as an mpirun job of this binary.
func benchCommNet(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	if dist.UnderMPI() {
		return nil, netWorker(opts, progress)
	}
	if !dist.MPIAvailable() {
		return nil, errors.New("bench comm-net needs the MPI backend: build with make build (-tags mpi, Open MPI installed)")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"bench", "comm-net"}
	if opts.quick {
		args = append(args, "--quick")
	}
	want := func(sec string) bool { return opts.only == nil || slices.Contains(opts.only, sec) }
	var res []benchResult
	if want("fusion") {
		fmt.Fprintln(progress, "comm-net: fused vs one-by-one all-reduce of the tiny and small presets' dense gradients, 2 MPI ranks")
		if res, err = runMPIBench(dist.MPIRunCommand(2, exe, args...), []string{netModeEnv + "=fusion"}, progress); err != nil {
			return nil, err
		}
	}
	if !want("hier") {
		return res, nil
	}
	fmt.Fprintln(progress, "comm-net: hierarchical vs flat dispatch, 2 nodes (network namespaces) x 2 ranks, "+netRate+"/s between them")
	cleanup, cmd, err := netCluster(exe, args, progress)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	hier, err := runMPIBench(cmd, []string{netModeEnv + "=hier"}, progress)
	if err != nil {
		return nil, err
	}
	return append(res, hier...), nil
}

// netCluster makes the emulated two-node cluster and returns the mpirun
// command that runs 4 ranks on it, 2 per namespace: mpirun itself runs in
// the first namespace, and starts the second "node"'s daemon through an
// rsh agent that enters the second namespace, with a host name of its own
// in a UTS namespace (so each node's ranks reach
// their daemon over their own loopback, and everything between the nodes
// crosses the rate-limited veth pair). cleanup deletes the namespaces.
func netCluster(exe string, args []string, progress io.Writer) (cleanup func(), cmd *exec.Cmd, err error) {
	if os.Geteuid() != 0 {
		return nil, nil, errors.New("the emulated cluster needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "tc", "mpirun"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, nil, fmt.Errorf("the emulated cluster needs %s (apt-get install iproute2 openmpi-bin)", tool)
		}
	}
	run := func(a ...string) error {
		if out, err := exec.Command(a[0], a[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v: %s", a, err, bytes.TrimSpace(out))
		}
		return nil
	}
	dir, err := os.MkdirTemp("", "moesys-cluster-")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() {
		exec.Command("ip", "netns", "del", netNS0).Run()
		exec.Command("ip", "netns", "del", netNS1).Run()
		os.RemoveAll(dir)
	}
	cleanup() // leftovers of an interrupted run
	if dir, err = os.MkdirTemp("", "moesys-cluster-"); err != nil {
		return nil, nil, err
	}
	steps := [][]string{
		{"ip", "netns", "add", netNS0}, {"ip", "netns", "add", netNS1},
		{"ip", "link", "add", netVeth0, "type", "veth", "peer", "name", netVeth1},
		{"ip", "link", "set", netVeth0, "netns", netNS0}, {"ip", "link", "set", netVeth1, "netns", netNS1},
		{"ip", "-n", netNS0, "addr", "add", "10.231.77.1/24", "dev", netVeth0},
		{"ip", "-n", netNS1, "addr", "add", "10.231.77.2/24", "dev", netVeth1},
	}
	for i, ns := range []string{netNS0, netNS1} {
		veth := []string{netVeth0, netVeth1}[i]
		steps = append(steps, []string{"ip", "-n", ns, "link", "set", "lo", "up"}, []string{"ip", "-n", ns, "link", "set", veth, "up"},
			[]string{"ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", netRate, "burst", "64kb", "latency", "50ms"})
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("emulated cluster: %w", err)
		}
	}
	agent := filepath.Join(dir, "nsagent")
	hosts := filepath.Join(dir, "hosts")
	err = os.WriteFile(agent, []byte("#!/bin/sh\n# rsh agent of the emulated cluster: the host is a network namespace\nhost=$1; shift\nexec ip netns exec \"$host\" unshare --uts /bin/sh -c \"hostname $host; $*\"\n"), 0o755)
	if err == nil {
		err = os.WriteFile(hosts, fmt.Appendf(nil, "localhost slots=%d\n%s slots=%d\n", netPerNode, netNS1, netPerNode), 0o644)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	a := []string{"netns", "exec", netNS0, "mpirun", "--allow-run-as-root", "--hostfile", hosts, "--mca", "plm_rsh_agent", agent,
		"--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", netSubnet, "--mca", "oob_tcp_if_include", netSubnet,
		"-x", netModeEnv, "-x", benchMPIOut, "-np", fmt.Sprint(2 * netPerNode), exe}
	fmt.Fprintf(progress, "comm-net: cluster: %s and %s, veth pair with tbf rate %s each way (this kernel has no netem: no added delay)\n", netNS0, netNS1, netRate)
	return cleanup, exec.Command("ip", append(a, args...)...), nil
}

// netWorker is one rank of a comm-net job.
func netWorker(opts benchOptions, progress io.Writer) error {
	return mpiBenchWorker("comm-net", func(c dist.Comm) ([]benchResult, error) {
		switch m := os.Getenv(netModeEnv); m {
		case "fusion":
			return netFusion(c, opts, progress)
		case "hier":
			return netHier(c, opts, progress)
		default:
			return nil, fmt.Errorf("%s=%q", netModeEnv, m)
		}
	})
}

// timeAB times a and b alternately, n pairs, and returns their medians
// (seconds). Rank 0's clock decides; a barrier starts each call.
func timeAB(ctx context.Context, c dist.Comm, n int, a, b func() error) (float64, float64, error) {
	ts, err := timeEach(ctx, c, n, a, b)
	if err != nil {
		return 0, 0, err
	}
	return ts[0], ts[1], nil
}

// timeEach times fs in turn, n rounds, and returns each one's median
// (seconds). Rank 0's clock decides; a barrier starts each call.
func timeEach(ctx context.Context, c dist.Comm, n int, fs ...func() error) ([]float64, error) {
	times := make([][]float64, len(fs))
	for range n {
		for i, f := range fs {
			if err := c.Barrier(ctx); err != nil {
				return nil, err
			}
			t := time.Now()
			if err := f(); err != nil {
				return nil, err
			}
			times[i] = append(times[i], time.Since(t).Seconds())
		}
	}
	med := make([]float64, len(fs))
	for i, ts := range times {
		med[i] = median(ts)
	}
	return med, nil
}

// netFusion: the dense gradients of the tiny and small presets (as data
// parallelism sums them every step), summed one tensor at a time and in
// fused buckets. The headline is the tiny preset's: its gradient list is
// many small tensors; the small preset's is dominated by a few large
// matrices, where fusion saves less.
func netFusion(c dist.Comm, opts benchOptions, progress io.Writer) ([]benchResult, error) {
	var res []benchResult
	for _, preset := range []string{"tiny", "small"} {
		r, err := netFusionOf(c, preset, opts, progress)
		if err != nil {
			return nil, err
		}
		res = append(res, r...)
	}
	return res, nil
}

func netFusionOf(c dist.Comm, preset string, opts benchOptions, progress io.Writer) ([]benchResult, error) {
	ctx := context.Background()
	o, err := train.PresetOptions(preset)
	if err != nil {
		return nil, err
	}
	net, err := model.NewNet(o.Model, 8)
	if err != nil {
		return nil, err
	}
	var tensors [][]float32
	bytes := 0
	for _, p := range net.Params {
		if expert, _ := net.ExpertParam(p); !expert {
			g := make([]float32, len(p.G))
			for i := range g {
				g[i] = float32(i%7) * 1e-3
			}
			tensors = append(tensors, g)
			bytes += 4 * len(g)
		}
	}
	f := dist.NewFused(c, tensors, train.DefaultBucketBytes)
	one := func() error {
		for _, t := range tensors {
			if err := c.AllReduce(ctx, t); err != nil {
				return err
			}
		}
		return nil
	}
	fused := func() error {
		f.Start(ctx)
		for i := range tensors {
			f.Ready(i)
		}
		return f.Wait()
	}
	pairs := 21
	if opts.quick {
		pairs = 7
	}
	// Each sample is fusionReps rounds back to back: a rank that waited
	// long in the barrier before a sample polls slowly for a moment (its
	// MPI thread pauses up to 1 ms between tests, dist's pollSleepMax),
	// which would otherwise skew a sub-millisecond sample.
	const fusionReps = 10
	reps := func(f func() error) func() error {
		return func() error {
			for range fusionReps {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		}
	}
	tOne, tFused, err := timeAB(ctx, c, pairs, reps(one), reps(fused))
	if err != nil {
		return nil, err
	}
	tOne, tFused = tOne/fusionReps, tFused/fusionReps
	note := fmt.Sprintf("%s preset's %d dense gradients (%s), %d MPI ranks on one machine; fused: %d buckets of %s; one by one %.2f ms, fused %.2f ms (per round; medians of %d alternating pairs of %d rounds)",
		preset, len(tensors), sizeLabel(bytes), c.Size(), f.Buckets(), sizeLabel(train.DefaultBucketBytes), 1e3*tOne, 1e3*tFused, pairs, fusionReps)
	if c.Rank() == 0 {
		fmt.Fprintf(progress, "comm-net: %s\n", note)
	}
	name := "comm_fused_vs_unfused_speedup"
	r := benchResult{Name: name, Value: tOne / tFused, Unit: "x", Ratio: tOne / tFused, Target: fusedTarget, Note: note}
	if preset != "tiny" {
		r.Name, r.Target = name+"_"+preset, 0
	}
	return []benchResult{r}, nil
}

// netHier: a MoE layer's forward dispatch (hidden 1024; each rank's
// tokens routed by a router with random weights, each (token, expert) row
// sent to the expert's rank, as moe.EP sends them) on 2 nodes of 2 ranks,
// three ways: the flat exchange, Hier's two-level exchange of the same
// rows, and the two levels with node-level deduplication (a token crosses
// to a node once and is fanned out there; moe.EP over a dist.Hier). The
// headline is the deduplicated dispatch over the flat one.
func netHier(c dist.Comm, opts benchOptions, progress io.Writer) ([]benchResult, error) {
	ctx := context.Background()
	const D, T = 1024, 1024 // hidden size, tokens per rank
	h, err := dist.NewHier(ctx, c, netPerNode)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	// The two-level exchange without deduplication: Hier's AllToAllV
	// behind a Comm that moe.EP does not recognise as a Hier.
	plain := struct{ dist.Comm }{h}
	rng := rand.New(rand.NewPCG(uint64(c.Rank()), 77))
	x := make([]float32, T*D)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	pairs := 7
	if opts.quick {
		pairs = 3
	}
	var res []benchResult
	for _, cfg := range []struct{ K, E int }{{2, 8}, {2, 64}, {8, 64}} {
		// The router: the same weights on every rank.
		wr := rand.New(rand.NewPCG(uint64(cfg.E), 5))
		wg := make([]float32, cfg.E*D)
		for i := range wg {
			wg[i] = float32(wr.NormFloat64() * 0.02)
		}
		logits := make([]float32, T*cfg.E)
		for t := range T {
			for e := range cfg.E {
				var s float64
				for d := range D {
					s += float64(x[t*D+d]) * float64(wg[e*D+d])
				}
				logits[t*cfg.E+e] = float32(s)
			}
		}
		routing := moe.Router{K: cfg.K, Normalize: true}.Route(logits, T, cfg.E)
		plan := moe.NewPlan(routing, cfg.E, -1)
		rows := make([]float32, plan.Rows()*D)
		moe.Dispatch(rows, x, plan, cfg.K, D)
		// Rows that cross between nodes: every routed row to the other node
		// (flat, two-level), one per token and node (deduplicated); summed
		// over the ranks.
		El, me := cfg.E/c.Size(), c.Rank()/netPerNode
		cross := []float32{0, 0}
		for t := range T {
			seen := false
			for k := range cfg.K {
				if (int(routing.IDsTK[t*cfg.K+k])/El)/netPerNode != me {
					cross[0]++
					seen = true
				}
			}
			if seen {
				cross[1]++
			}
		}
		if err := c.AllReduce(ctx, cross); err != nil {
			return nil, err
		}
		var eps [3]*moe.EP
		for i, comm := range []dist.Comm{c, plain, h} {
			if eps[i], err = moe.NewEP(comm, cfg.E); err != nil {
				return nil, err
			}
		}
		var outs [3][]float32
		send := func(i int) func() error {
			return func() error {
				out, _, err := eps[i].Send(ctx, moe.Forward, rows, &plan, D)
				outs[i] = out
				return err
			}
		}
		ts, err := timeEach(ctx, c, pairs, send(0), send(1), send(2))
		if err != nil {
			return nil, err
		}
		for i := 1; i < 3; i++ {
			if !slices.Equal(outs[i], outs[0]) {
				return nil, fmt.Errorf("top-%d/%d experts: the hierarchical dispatch (%d) delivered other rows than the flat one", cfg.K, cfg.E, i)
			}
		}
		tFlat, tTwo, tDedup := ts[0], ts[1], ts[2]
		name := fmt.Sprintf("comm_hier_vs_flat_alltoall_speedup_top%d_e%d", cfg.K, cfg.E)
		if cfg.K == 2 && cfg.E == 8 {
			name = "comm_hier_vs_flat_alltoall_speedup"
		}
		note := fmt.Sprintf("forward dispatch of %d tokens x top-%d over %d experts per rank, hidden %d (f32 rows, %s routed per rank); 2 nodes x 2 ranks, %s/s link; flat %.1f ms, two-level %.1f ms, two-level with node-level dedup %.1f ms (medians of %d rounds); rows between nodes: %.0f flat, %.0f deduplicated (%.2fx fewer: the link-bound ceiling)",
			T, cfg.K, cfg.E, D, sizeLabel(4*len(rows)), netRate, 1e3*tFlat, 1e3*tTwo, 1e3*tDedup, pairs, cross[0], cross[1], float64(cross[0]/cross[1]))
		if c.Rank() == 0 {
			fmt.Fprintf(progress, "comm-net: %s\n", note)
		}
		r := benchResult{Name: name, Value: tFlat / tDedup, Unit: "x", Ratio: tFlat / tDedup, Note: note}
		if name == "comm_hier_vs_flat_alltoall_speedup" {
			r.Target = hierTarget
		}
		res = append(res, r)
	}
	return res, nil
}
