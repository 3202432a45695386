package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
)

const inspectLogitsHelp = `Usage: moesys inspect logits --model DIR --inputs FILE --out DIR

Run each input sequence alone, from position 0, through the checkpoint in DIR
and write what any framework can be cross-checked against (the format of
testdata/hf/*/expected):

  OUT/logits_{i}.f32     raw little-endian float32, shape [T, vocab]
  OUT/routing_{i}.json   {"layers": [null | [[expert ids of token 0], ...], ...]}
                         (ids in descending weight; null for dense layers)

FILE is JSON: {"sequences": [[token ids], ...]} (no BOS is added).

Flags:
`

const inspectLogitsExamples = `
Example:
  moesys inspect logits --model testdata/hf/mixtral_f32 \
      --inputs testdata/hf/mixtral_f32/expected/inputs.json --out /tmp/mixtral
`

func runInspectLogits(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect logits", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("model", "", "checkpoint directory (config.json + safetensors)")
	inputs := fs.String("inputs", "", `JSON file {"sequences": [[ids], ...]}`)
	out := fs.String("out", "", "directory to write logits_{i}.f32 and routing_{i}.json into (created)")
	usage := func(w io.Writer) {
		fmt.Fprint(w, inspectLogitsHelp)
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-7s %s\n", f.Name, f.Usage) })
		fmt.Fprint(w, inspectLogitsExamples)
	}
	if done, err := parseFlags(fs, args, "inspect logits", usage, stdout, stderr); done {
		return err
	}
	if *dir == "" || *inputs == "" || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "moesys inspect logits: --model, --inputs and --out are required")
		fmt.Fprintln(stderr)
		usage(stderr)
		return errUsage
	}
	*dir = modelDir(*dir, "inspecting", stderr)
	var in struct{ Sequences [][]int32 }
	b, err := os.ReadFile(*inputs)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("%s: %v", *inputs, err)
	}
	if len(in.Sequences) == 0 {
		return fmt.Errorf("%s: no sequences", *inputs)
	}
	fmt.Fprintln(stderr, kernel.Note())
	m, err := model.Load(*dir)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for i, seq := range in.Sequences {
		if len(seq) == 0 {
			return fmt.Errorf("%s: sequence %d is empty", *inputs, i)
		}
		s := m.NewSession(len(seq))
		s.RecordRouting = true
		logits, err := s.Forward(seq)
		if err != nil {
			return fmt.Errorf("sequence %d: %w", i, err)
		}
		raw := make([]byte, 4*len(logits))
		for j, v := range logits {
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
		}
		if err := atomicfile.WriteFile(filepath.Join(*out, fmt.Sprintf("logits_%d.f32", i)), raw); err != nil {
			return err
		}
		layers := make([]any, m.Cfg.L)
		K := m.Cfg.K
		for l, ids := range s.Routing {
			if ids == nil {
				continue
			}
			tok := make([][]int32, len(seq))
			for t := range tok {
				tok[t] = ids[t*K : (t+1)*K]
			}
			layers[l] = tok
		}
		rj, err := json.Marshal(map[string]any{"layers": layers})
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(*out, fmt.Sprintf("routing_%d.json", i)), rj); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "sequence %d: %d tokens -> %s\n", i, len(seq), filepath.Join(*out, fmt.Sprintf("logits_%d.f32", i)))
	}
	return nil
}
