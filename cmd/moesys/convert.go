package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

func init() {
	register("convert", "rewrite a checkpoint into the offloading layout, or back", runConvert)
}

func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	src := fs.String("model", "", "checkpoint directory to convert, or a training run (its latest checkpoint)")
	dst := fs.String("out", "", "output directory (created)")
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: moesys convert --model DIR --out DIR")
		fmt.Fprintln(w, "\nA plain Hugging Face checkpoint becomes the offloading layout: dense tensors in")
		fmt.Fprintln(w, "model.safetensors, each routed expert's tensors contiguous and 4 KiB aligned in")
		fmt.Fprintln(w, "experts.bin with an index, experts.json. A layout (a directory with experts.json)")
		fmt.Fprintln(w, "becomes a plain single-file checkpoint again, tensor for tensor bit-exact.")
		fmt.Fprintln(w, "\nExamples:\n  moesys convert --model ~/models/OLMoE-1B-7B --out ~/models/OLMoE-1B-7B.offload")
		fmt.Fprintln(w, "  moesys convert --model ~/models/OLMoE-1B-7B.offload --out /tmp/olmoe-plain")
	}
	if done, err := parseFlags(fs, args, "convert", usage, stdout, stderr); done {
		return err
	}
	if *src == "" || *dst == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "moesys convert: --model and --out are required")
		fmt.Fprintln(stderr)
		usage(stderr)
		return errUsage
	}
	*src = modelDir(*src, "converting", stderr)
	if abs1, _ := filepath.Abs(*src); func() bool { abs2, _ := filepath.Abs(*dst); return abs1 == abs2 }() {
		return errors.New("--out must differ from --model")
	}
	start := time.Now()
	var err error
	what := "offloading layout"
	if _, statErr := os.Stat(filepath.Join(*src, offload.IndexFile)); statErr == nil {
		what = "plain checkpoint"
		err = model.ConvertFromOffload(*src, *dst)
	} else {
		err = model.ConvertToOffload(*src, *dst)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s as a %s in %.1fs\n", *dst, what, time.Since(start).Seconds())
	return nil
}
