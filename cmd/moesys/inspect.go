package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/moesys/moesys/safetensors"
)

func init() {
	register("inspect", "print a checkpoint's config, tensors, sizes and parameter counts", runInspect)
}

const inspectHelp = `Usage: moesys inspect PATH [--json] [--tensors]
       moesys inspect logits --model DIR --inputs FILE --out DIR   (see moesys inspect logits --help)

Print what a Hugging Face checkpoint holds: the key fields of its config.json,
the number of tensors and bytes per dtype, and parameter counts split into
dense (always active, shared experts included) and routed-expert parameters
(tensors under an ".experts." path segment), with the parameters active per
token (dense + routed * k/E) when the config gives the expert count E and
num_experts_per_tok k.

PATH is a checkpoint directory (config.json with model.safetensors, or a
sharded model.safetensors.index.json and its shards) or a single .safetensors
file (read without a config).

Flags:
`

const inspectExamples = `
Examples:
  moesys inspect testdata/hf/mixtral_f32
  moesys inspect ~/models/Qwen1.5-MoE-A2.7B --tensors
  moesys inspect --json testdata/hf/qwen2_moe | jq .params
  moesys inspect testdata/hf/train_tiny/expected/grads.safetensors
`

// configKeys are the config.json fields printed first, in this order, when
// present; any other keys follow compactly.
var configKeys = []string{
	"model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
	"head_dim", "intermediate_size", "moe_intermediate_size", "num_local_experts", "num_experts",
	"n_routed_experts", "n_shared_experts", "num_experts_per_tok", "shared_expert_intermediate_size",
	"vocab_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "norm_topk_prob",
	"sliding_window", "decoder_sparse_step", "mlp_only_layers",
}

// expertCountKeys name the routed-expert count E in the configs of the
// supported architectures (Mixtral; Qwen2/3-MoE and OLMoE; DeepSeek).
var expertCountKeys = []string{"num_local_experts", "num_experts", "n_routed_experts"}

// checkpoint is what inspect needs of a safetensors.File or Set.
type checkpoint interface {
	Names() []string
	Info(name string) (safetensors.TensorInfo, bool)
	Close() error
}

// inspectReport is everything inspect prints; --json emits it as is.
type inspectReport struct {
	Path       string                     `json:"path"`
	Files      []string                   `json:"files"`
	Config     json.RawMessage            `json:"config,omitempty"`
	Tensors    int                        `json:"tensors"`
	TotalBytes int64                      `json:"total_bytes"`
	DTypes     map[string]dtypeTotals     `json:"dtypes"`
	Params     paramCounts                `json:"params"`
	TensorList []tensorRow                `json:"tensor_list,omitempty"`
	config     map[string]json.RawMessage // parsed Config, for text output
}

type dtypeTotals struct {
	Tensors int   `json:"tensors"`
	Bytes   int64 `json:"bytes"`
	Params  int64 `json:"params"`
}

type paramCounts struct {
	Total  int64 `json:"total"`
	Dense  int64 `json:"dense"`  // always active, shared experts included
	Routed int64 `json:"routed"` // in routed-expert tensors
	// Experts (E) and ExpertsPerToken (k) come from the config; Active is
	// Dense + Routed*k/E, set only when both are known.
	Experts         int64  `json:"experts,omitempty"`
	ExpertsPerToken int64  `json:"experts_per_token,omitempty"`
	Active          *int64 `json:"active_per_token,omitempty"`
}

type tensorRow struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	Bytes int64  `json:"bytes"`
}

func runInspect(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "logits" {
		return runInspectLogits(args[1:], stdout, stderr)
	}
	fset := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fset.SetOutput(io.Discard) // usage and errors are printed below
	jsonOut := fset.Bool("json", false, "print one JSON object with everything instead of text")
	listTensors := fset.Bool("tensors", false, "also list every tensor: name, dtype, shape, bytes")
	usage := func(w io.Writer) {
		fmt.Fprint(w, inspectHelp)
		fset.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-9s %s\n", f.Name, f.Usage) })
		fmt.Fprint(w, inspectExamples)
	}
	// Flags may come before or after PATH.
	var paths []string
	for {
		if err := fset.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage(stdout)
				return nil
			}
			fmt.Fprintf(stderr, "moesys inspect: %v\n\n", err)
			usage(stderr)
			return errUsage
		}
		if fset.NArg() == 0 {
			break
		}
		paths = append(paths, fset.Arg(0))
		args = fset.Args()[1:]
	}
	if len(paths) != 1 {
		fmt.Fprintf(stderr, "moesys inspect: want one PATH, got %d\n\n", len(paths))
		usage(stderr)
		return errUsage
	}
	rep, err := inspect(paths[0], *listTensors)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.writeText(stdout)
}

// inspect opens the checkpoint at path and gathers its report.
func inspect(path string, withTensors bool) (*inspectReport, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	rep := &inspectReport{Path: path, DTypes: map[string]dtypeTotals{}}
	var ck checkpoint
	if st.IsDir() {
		if err := rep.readConfig(filepath.Join(path, "config.json")); err != nil {
			return nil, err
		}
		set, err := safetensors.OpenModel(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, noCheckpointError(path, err)
		}
		if err != nil {
			return nil, err
		}
		ck, rep.Files = set, set.Shards()
	} else {
		f, err := safetensors.Open(path)
		if err != nil {
			return nil, err
		}
		ck, rep.Files = f, []string{path}
	}
	defer ck.Close()
	rep.count(ck, withTensors)
	return rep, nil
}

// noCheckpointError explains a directory without a standard checkpoint,
// naming any other .safetensors files it holds.
func noCheckpointError(dir string, err error) error {
	others, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if len(others) == 0 {
		return err
	}
	for i, o := range others {
		others[i] = filepath.Base(o)
	}
	return fmt.Errorf("%w; it holds %s: pass one of them as PATH", err, strings.Join(others, ", "))
}

// readConfig loads config.json if present; a missing file is not an error.
func (r *inspectReport) readConfig(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: not a JSON object: %v", path, err)
	}
	if m == nil { // the file was "null"
		return fmt.Errorf("%s: not a JSON object", path)
	}
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	r.Config, r.config = c.Bytes(), m
	var cerr error
	for _, k := range expertCountKeys {
		if v, ok := r.configInt(k, &cerr); ok {
			r.Params.Experts = v
			break
		}
	}
	if v, ok := r.configInt("num_experts_per_tok", &cerr); ok {
		r.Params.ExpertsPerToken = v
	}
	if cerr != nil {
		return fmt.Errorf("%s: %v", path, cerr)
	}
	return nil
}

// configInt returns config key k as an integer; absent or null is !ok, any
// other non-integer sets *err.
func (r *inspectReport) configInt(k string, err *error) (int64, bool) {
	raw, ok := r.config[k]
	if !ok || string(raw) == "null" {
		return 0, false
	}
	var v int64
	if e := json.Unmarshal(raw, &v); e != nil || v < 0 {
		if *err == nil {
			*err = fmt.Errorf("%s = %s: want a non-negative integer", k, raw)
		}
		return 0, false
	}
	return v, true
}

// isRoutedExpert reports whether a tensor belongs to a routed expert: its
// name has an "experts" path segment (shared_expert(s) do not count).
func isRoutedExpert(name string) bool {
	return strings.Contains("."+name+".", ".experts.")
}

// count fills the tensor, byte and parameter totals.
func (r *inspectReport) count(ck checkpoint, withTensors bool) {
	for _, name := range ck.Names() {
		info, _ := ck.Info(name)
		n := int64(info.Shape.NumElements()) // validated when the file was opened
		r.Tensors++
		r.TotalBytes += info.Size
		d := r.DTypes[info.DType.String()]
		d.Tensors++
		d.Bytes += info.Size
		d.Params += n
		r.DTypes[info.DType.String()] = d
		r.Params.Total += n
		if isRoutedExpert(name) {
			r.Params.Routed += n
		} else {
			r.Params.Dense += n
		}
		if withTensors {
			r.TensorList = append(r.TensorList, tensorRow{name, info.DType.String(), slices.Clone([]int(info.Shape)), info.Size})
		}
	}
	if p := &r.Params; p.Experts > 0 && p.ExpertsPerToken > 0 {
		active := p.Dense + p.Routed/p.Experts*p.ExpertsPerToken + p.Routed%p.Experts*p.ExpertsPerToken/p.Experts
		p.Active = &active
	}
}

func (r *inspectReport) writeText(w io.Writer) error {
	var b strings.Builder
	files := make([]string, len(r.Files))
	for i, f := range r.Files {
		files[i] = filepath.Base(f)
	}
	fmt.Fprintf(&b, "checkpoint  %s\nfiles       %s\n", r.Path, summarizeFiles(files))
	if r.config == nil {
		b.WriteString("config      (none)\n")
	} else {
		b.WriteString("config.json\n")
		for _, k := range configKeys {
			if v, ok := r.config[k]; ok {
				fmt.Fprintf(&b, "  %-32s %s\n", k, plainJSON(v))
			}
		}
		var other []string
		for _, k := range slices.Sorted(maps.Keys(r.config)) {
			if !slices.Contains(configKeys, k) {
				other = append(other, k+"="+compactJSON(r.config[k]))
			}
		}
		writeWrapped(&b, "  other: ", other, 100)
	}
	fmt.Fprintf(&b, "tensors     %d, %d bytes (%s)\n", r.Tensors, r.TotalBytes, humanBytes(r.TotalBytes))
	for _, d := range slices.Sorted(maps.Keys(r.DTypes)) {
		t := r.DTypes[d]
		fmt.Fprintf(&b, "  %-8s %5d tensors %14d bytes %16d params\n", d, t.Tensors, t.Bytes, t.Params)
	}
	p := r.Params
	b.WriteString("parameters\n")
	fmt.Fprintf(&b, "  total             %16d  %s\n", p.Total, humanCount(p.Total))
	fmt.Fprintf(&b, "  dense             %16d  %s  always active, shared experts included\n", p.Dense, humanCount(p.Dense))
	fmt.Fprintf(&b, "  routed experts    %16d  %s", p.Routed, humanCount(p.Routed))
	if p.Experts > 0 {
		fmt.Fprintf(&b, "  %d experts", p.Experts)
		if p.ExpertsPerToken > 0 {
			fmt.Fprintf(&b, ", %d per token", p.ExpertsPerToken)
		}
	}
	b.WriteString("\n")
	if p.Active != nil {
		fmt.Fprintf(&b, "  active per token  %16d  %s  dense + routed * %d/%d\n", *p.Active, humanCount(*p.Active), p.ExpertsPerToken, p.Experts)
	} else if p.Routed > 0 {
		b.WriteString("  active per token  unknown (needs the expert count and num_experts_per_tok from config.json)\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if r.TensorList == nil {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNAME\tDTYPE\tSHAPE\tBYTES")
	for _, t := range r.TensorList {
		dims := make([]string, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = fmt.Sprint(d)
		}
		fmt.Fprintf(tw, "%s\t%s\t(%s)\t%d\n", t.Name, t.DType, strings.Join(dims, ", "), t.Bytes)
	}
	return tw.Flush()
}

// summarizeFiles lists a few file names and counts the rest.
func summarizeFiles(names []string) string {
	const show = 3
	s := strings.Join(names[:min(len(names), show)], ", ")
	if len(names) > show {
		s += fmt.Sprintf(", ... (%d files)", len(names))
	}
	return s
}

// plainJSON is compactJSON with strings unquoted.
func plainJSON(raw json.RawMessage) string {
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return compactJSON(raw)
}

// compactJSON prints a config value on one line.
func compactJSON(raw json.RawMessage) string {
	var c bytes.Buffer
	if json.Compact(&c, raw) != nil {
		return string(raw)
	}
	return c.String()
}

// writeWrapped writes items after prefix, space-separated, wrapping lines at
// width columns with continuation lines indented like prefix.
func writeWrapped(b *strings.Builder, prefix string, items []string, width int) {
	if len(items) == 0 {
		return
	}
	indent := strings.Repeat(" ", len(prefix))
	line := prefix
	for i, it := range items {
		if i > 0 && len(line)+1+len(it) > width {
			b.WriteString(line + "\n")
			line = indent
		} else if i > 0 {
			line += " "
		}
		line += it
	}
	b.WriteString(line + "\n")
}

// humanBytes formats n with a binary unit.
func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.2f %s", v, units[i])
}

// humanCount formats a parameter count with a decimal suffix (K, M, B, T).
func humanCount(n int64) string {
	units := []string{"", "K", "M", "B", "T"}
	v := float64(n)
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d", n)
	}
	return fmt.Sprintf("%.2f%s", v, units[i])
}
