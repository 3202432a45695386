package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/tensor"
)

func init() {
	register("random-model", "write a checkpoint with random weights and a real model's shape", runRandomModel)
}

func runRandomModel(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("random-model", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	shape := fs.String("shape", "", "named shape: "+strings.Join(model.ShapeNames(), ", "))
	config := fs.String("config", "", "or a config.json to take the shape from")
	dtype := fs.String("dtype", "bf16", "weight dtype: bf16 or f32")
	out := fs.String("out", "", "output directory (created)")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same bytes)")
	shardGB := fs.Float64("shard-gb", 4, "largest shard file in GiB (one file if the model fits)")
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: moesys random-model (--shape NAME | --config FILE) --out DIR [--dtype bf16|f32] [--seed N]")
		fmt.Fprintln(w, "\nWrites config.json and safetensors weights (uniform, std 0.02; norms 1) streaming")
		fmt.Fprintln(w, "to disk, so models larger than RAM can be made. Checks free disk space first.")
		fmt.Fprintln(w, "\nFlags:")
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-9s %s (default %q)\n", f.Name, f.Usage, f.DefValue) })
		fmt.Fprintln(w, "\nExamples:\n  moesys random-model --shape olmoe-1b-7b --dtype bf16 --out /data/olmoe-random")
		fmt.Fprintln(w, "  moesys random-model --config my/config.json --dtype f32 --out /tmp/m")
	}
	if done, err := parseFlags(fs, args, "random-model", usage, stdout, stderr); done {
		return err
	}
	if *out == "" || (*shape == "") == (*config == "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "moesys random-model: need --out and exactly one of --shape, --config")
		fmt.Fprintln(stderr)
		usage(stderr)
		return errUsage
	}
	var cfg []byte
	var err error
	if *shape != "" {
		cfg, err = model.ShapeConfig(*shape)
	} else {
		cfg, err = os.ReadFile(*config)
	}
	if err != nil {
		return err
	}
	dt := map[string]tensor.DType{"bf16": tensor.BF16, "f32": tensor.F32}[strings.ToLower(*dtype)]
	if dt == tensor.Invalid {
		return fmt.Errorf("--dtype %q: want bf16 or f32", *dtype)
	}
	start := time.Now()
	last := time.Time{}
	err = model.WriteRandom(*out, cfg, model.RandomOptions{DType: dt, Seed: *seed, ShardBytes: int64(*shardGB * (1 << 30)),
		Progress: func(done, total int64) {
			if time.Since(last) < 500*time.Millisecond && done < total {
				return
			}
			last = time.Now()
			el := time.Since(start).Seconds()
			eta := el / float64(done) * float64(total-done)
			fmt.Fprintf(stderr, "\r%6.2f / %.2f GiB  %5.1f%%  %.0f MB/s  ETA %3.0fs ", float64(done)/(1<<30), float64(total)/(1<<30),
				100*float64(done)/float64(total), float64(done)/el/1e6, eta)
		}})
	fmt.Fprintln(stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s in %.1fs\n", *out, time.Since(start).Seconds())
	return nil
}
