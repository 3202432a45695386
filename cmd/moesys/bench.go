package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moesys/moesys/kernel"
)

// benchResult is one measured figure, in the format of docs/BENCHMARKS.md.
type benchResult struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Bound  float64 `json:"bound,omitempty"`
	Ratio  float64 `json:"ratio,omitempty"`
	Target float64 `json:"target,omitempty"` // required ratio, where an issue sets one
	// TargetMax makes Target an upper limit: the ratio must not exceed it
	// (an overhead, a share of a peer's speed), instead of reach it.
	TargetMax bool   `json:"target_max,omitempty"`
	Note      string `json:"note,omitempty"`
}

// meets reports whether r's ratio satisfies its target (true without one).
func (r benchResult) meets() bool {
	switch {
	case r.Target == 0:
		return true
	case r.TargetMax:
		return r.Ratio <= r.Target
	default:
		return r.Ratio >= r.Target
	}
}

type benchMachine struct {
	CPU     string `json:"cpu"`
	Cores   int    `json:"cores"`
	Threads int    `json:"threads"`
	Go      string `json:"go"`
	Kernels string `json:"kernels"`
}

type benchReport struct {
	Suite   string        `json:"suite"`
	Machine benchMachine  `json:"machine"`
	Results []benchResult `json:"results"`
}

// benchSuites maps a suite name to its runner; runners append results and
// print progress to progress (stderr).
var benchSuites = map[string]struct {
	summary string
	run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
}{}

type benchOptions struct {
	quick    bool
	duration time.Duration // serve: the load phase's length (0: the suite's default)
	model    string        // checkpoint directory for model suites ("" = default)
	only     []string      // sections to run (suites with sections; nil: all)
	ranks    []int         // train: the parallel section's rank counts (--ranks)
	steps    int           // train --ranks: timed steps per run (0: default)
	shard    bool          // train --ranks: also each W > 1 with the dense parameters sharded (--shard-dense)
	device   string        // decode, offload: "cpu" or "cuda" (--device)
	compute  string        // --device cuda: bf16 or f32
}

// benchSections lists the sections of the suites that have them (--only).
var benchSections = map[string][]string{"offload": offloadSections, "comm-net": {"fusion", "hier"}}

func init() {
	register("bench", "measure speed against this machine's limits (suites: kernels, decode, train, offload, comm, serve)", runBench)
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "fewer repetitions (about a minute); same result names")
	modelDir := fs.String("model", "", "checkpoint for model suites (decode: default a random olmoe-1b-7b bf16 made once in the user cache)")
	asJSON := fs.Bool("json", false, "print one JSON object (docs/BENCHMARKS.md format) on stdout")
	duration := fs.Duration("duration", 0, "serve: length of the 64-client load phase (default 60s; --quick 15s)")
	only := fs.String("only", "", "comma-separated sections to run (offload: "+strings.Join(offloadSections, ", ")+"; comm-net: fusion, hier); default all")
	ranks := fs.String("ranks", "", "train: data + expert parallel training over these rank counts instead (e.g. 1,2): tokens/s and communication share, MPI processes and in-process ranks")
	steps := fs.Int("steps", 0, "train --ranks: timed steps per run (default 5, --quick 3)")
	shard := fs.Bool("shard-dense", false, "train --ranks: also run each W > 1 with the dense parameters sharded over the ranks (ZeRO-3, path 1 of 2D prefetch): tokens/s and the time path 1 was exposed per step")
	device := fs.String("device", "cpu", "decode, offload: cpu, or cuda for the GPU suites (issue 9; an error without a GPU)")
	compute := fs.String("compute", "bf16", "--device cuda: bf16 or f32 compute on the GPU")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: moesys bench SUITE [--quick] [--json] [--only SECTIONS] [--ranks 1,2] [--device cuda]")
		fmt.Fprintln(stderr, "\nSuites:")
		names := make([]string, 0, len(benchSuites))
		for n := range benchSuites {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stderr, "  %-10s %s\n", n, benchSuites[n].summary)
		}
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nExamples:\n  moesys bench kernels --quick\n  moesys bench kernels --json > kernels.json\n  moesys bench offload --only disk\n  moesys bench train --ranks 1,2\n  moesys bench decode --device cuda\n  moesys bench offload --device cuda --json")
	}
	suiteName := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		suiteName, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return errUsage
	}
	if suiteName == "" && fs.NArg() > 0 {
		suiteName = fs.Arg(0)
	}
	suite, ok := benchSuites[suiteName]
	if !ok {
		fs.Usage()
		if suiteName == "" {
			return errUsage
		}
		return fmt.Errorf("unknown suite %q", suiteName)
	}
	opts := benchOptions{quick: *quick, model: *modelDir, steps: *steps, duration: *duration, shard: *shard, device: *device, compute: *compute}
	if *device != "cpu" && *device != "cuda" {
		return fmt.Errorf("--device %q: want cpu or cuda", *device)
	}
	if *device == "cuda" && suiteName != "decode" && suiteName != "offload" {
		return fmt.Errorf("--device cuda: only the decode and offload suites run on the GPU")
	}
	if *shard && *ranks == "" {
		return fmt.Errorf("--shard-dense: only bench train --ranks shards the dense parameters")
	}
	if *ranks != "" {
		if suiteName != "train" {
			return fmt.Errorf("--ranks: only the train suite runs over ranks")
		}
		for _, f := range strings.Split(*ranks, ",") {
			w, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || w < 1 {
				return fmt.Errorf("--ranks %q: want rank counts like 1,2", *ranks)
			}
			opts.ranks = append(opts.ranks, w)
		}
	}
	if *only != "" {
		opts.only = strings.Split(*only, ",")
		for _, o := range opts.only {
			secs := benchSections[suiteName]
			if secs == nil {
				return fmt.Errorf("--only: suite %s has no sections", suiteName)
			}
			if !slices.Contains(secs, o) {
				return fmt.Errorf("--only: suite %s has no section %q (sections: %s)", suiteName, o, strings.Join(secs, ", "))
			}
		}
	}
	fmt.Fprintln(stderr, kernel.Note())
	results, err := suite.run(opts, stderr)
	if err != nil {
		return err
	}
	rep := benchReport{Suite: suiteName, Machine: machineInfo(), Results: results}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printBenchTable(stdout, rep)
	return nil
}

func machineInfo() benchMachine {
	cpu := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return benchMachine{CPU: cpu, Cores: runtime.NumCPU(), Threads: kernel.Threads(), Go: runtime.Version(), Kernels: kernel.CurrentLevel().String()}
}

func printBenchTable(w io.Writer, rep benchReport) {
	m := rep.Machine
	fmt.Fprintf(w, "suite %s on %s (%d cores, kernels %s, %s)\n\n", rep.Suite, m.CPU, m.Cores, m.Kernels, m.Go)
	fmt.Fprintf(w, "%-40s %12s %-8s %10s %7s %8s  %s\n", "name", "value", "unit", "bound", "ratio", "target", "")
	for _, r := range rep.Results {
		bound, ratio, target, verdict := "", "", "", ""
		if r.Bound != 0 {
			bound = fmt.Sprintf("%.1f", r.Bound)
		}
		if r.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		if r.Target != 0 {
			target = fmt.Sprintf(">= %.2f", r.Target)
			if r.TargetMax {
				target = fmt.Sprintf("<= %.2f", r.Target)
			}
			verdict = "ok"
			switch {
			case !r.meets() && r.TargetMax:
				verdict = "ABOVE TARGET"
			case !r.meets():
				verdict = "BELOW TARGET"
			}
		}
		fmt.Fprintf(w, "%-40s %12.2f %-8s %10s %7s %8s  %s\n", r.Name, r.Value, r.Unit, bound, ratio, target, verdict)
		if r.Note != "" {
			fmt.Fprintf(w, "%-40s   %s\n", "", r.Note)
		}
	}
}

// measure returns the median seconds per call of f over reps repetitions,
// each repetition timing enough calls to last at least minRep, after one
// warm-up call.
func measure(reps int, minRep time.Duration, f func()) float64 {
	f()
	times := make([]float64, 0, reps)
	for r := 0; r < reps; r++ {
		n := 0
		start := time.Now()
		for {
			f()
			n++
			if el := time.Since(start); el >= minRep {
				times = append(times, el.Seconds()/float64(n))
				break
			}
		}
	}
	sort.Float64s(times)
	return times[len(times)/2]
}
