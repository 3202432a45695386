package model

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moesys/moesys/safetensors"
)

// saveTinyNet writes a checkpoint of a seeded Net of c into a temporary
// directory and returns the Net and the directory.
func saveTinyNet(t *testing.T, c *Config, maxT int) (*Net, string) {
	t.Helper()
	n, err := NewNet(c, maxT)
	if err != nil {
		t.Fatal(err)
	}
	n.Init(7, 0.1)
	dir := t.TempDir()
	if err := n.SaveWeights(dir, false, nil); err != nil {
		t.Fatal(err)
	}
	return n, dir
}

// TestSessionMatchesNet holds the inference path (SaveWeights, Load,
// Session) and the training Net together: same logits per row, same
// experts per MoE layer, for a whole prompt, for a prefill followed by
// single-token decode steps, and after MakeResident, with and without
// pre-gates.
func TestSessionMatchesNet(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
	}{
		{"dense-layer", func(c *Config) {}},
		{"pregate-1", func(c *Config) { c.PregateDist = 1 }},
		{"pregate-2", func(c *Config) { c.PregateDist = 2 }},
		{"pregate-1-shared", func(c *Config) { c.PregateDist = 1; c.SharedFFN = 3 }},
		{"switch-pregate-1", func(c *Config) { c.MoE = []bool{false, true, false, true}; c.PregateDist = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig()
			tc.mod(c)
			const T, decode = 9, 3
			n, dir := saveTinyNet(t, c, T)
			m, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for l, ly := range m.Layers {
				if hasRouter, wantRouter := ly.Router.Rows > 0, c.MoE[l] && c.RouteSource(l) < 0; hasRouter != wantRouter {
					t.Fatalf("layer %d: router loaded %v, want %v", l, hasRouter, wantRouter)
				}
				if hasPregate, wantPregate := ly.Pregate.Rows > 0, c.PregateTarget(l) >= 0; hasPregate != wantPregate {
					t.Fatalf("layer %d: pre-gate loaded %v, want %v", l, hasPregate, wantPregate)
				}
			}

			rng := rand.New(rand.NewPCG(1, 2))
			ids, tgt := make([]int32, T), make([]int32, T)
			for i := range ids {
				ids[i] = int32(rng.IntN(c.V))
			}
			copy(tgt, ids[1:])
			tgt[T-1] = -1
			fwd(t, n, ids, tgt, 1, T, 0)
			want := n.Logits()
			V, K := c.V, c.K

			// checkRows compares got (rows, V) and the recorded routing of s
			// with the Net's rows t0.. .
			checkRows := func(what string, got []float32, s *Session, t0 int) {
				t.Helper()
				rows := len(got) / V
				for i := 0; i < rows; i++ {
					r := t0 + i
					if e := relErr(got[i*V:(i+1)*V], want[r*V:(r+1)*V]); !(e < 1e-5) {
						t.Fatalf("%s: row %d logits rel err %g", what, r, e)
					}
				}
				for l := range c.L {
					wantIDs := n.RoutingIDs(l)
					if wantIDs == nil {
						if s.Routing[l] != nil {
							t.Fatalf("%s: dense layer %d recorded routing", what, l)
						}
						continue
					}
					if g, w := s.Routing[l], wantIDs[t0*K:(t0+rows)*K]; !slices.Equal(g, w) {
						t.Fatalf("%s: layer %d rows %d..%d experts %v, want %v", what, l, t0, t0+rows-1, g, w)
					}
				}
			}

			s := m.NewSession(T)
			s.RecordRouting = true
			got, err := s.Forward(ids)
			if err != nil {
				t.Fatal(err)
			}
			checkRows("prompt", got, s, 0)

			s = m.NewSession(T)
			s.RecordRouting = true
			got, err = s.Forward(ids[:T-decode])
			if err != nil {
				t.Fatal(err)
			}
			checkRows("prefill", got, s, 0)
			for i := T - decode; i < T; i++ {
				if got, err = s.Forward(ids[i : i+1]); err != nil {
					t.Fatal(err)
				}
				checkRows("decode", got, s, i)
			}

			// Resident weights (Mats must list every matrix, pre-gates
			// included: the mapping is released).
			if _, err := m.MakeResident(true); err != nil {
				t.Fatal(err)
			}
			s = m.NewSession(T)
			s.RecordRouting = true
			if got, err = s.Forward(ids); err != nil {
				t.Fatal(err)
			}
			checkRows("resident", got, s, 0)
		})
	}
}

// TestLoadNamesMissingPregate: a pre-gated config whose weights lack a
// pre-gate fails to load with ErrWeights naming that tensor.
func TestLoadNamesMissingPregate(t *testing.T) {
	pregated := func() *Config { c := tinyConfig(); c.PregateDist = 1; return c }
	// tinyConfig's MoE layers are 0, 2, 3: layer 2's pre-gate routes layer 3.
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T) string // returns the checkpoint directory
		missing string
	}{
		{"tensor-dropped", func(t *testing.T) string {
			_, dir := saveTinyNet(t, pregated(), 4)
			dropTensor(t, filepath.Join(dir, WeightsFile), SpecFor("moesys").Pregate(2))
			return dir
		}, SpecFor("moesys").Pregate(2)},
		{"config-pregated-weights-not", func(t *testing.T) string {
			_, dir := saveTinyNet(t, tinyConfig(), 4)
			js, err := pregated().MarshalHF()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, SpecFor("moesys").Pregate(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(tc.prepare(t))
			if err == nil {
				m.Close()
				t.Fatal("Load succeeded")
			}
			if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tc.missing) {
				t.Fatalf("got %v, want ErrWeights naming %s", err, tc.missing)
			}
		})
	}
}

// dropTensor rewrites the safetensors file at path without tensor name.
func dropTensor(t *testing.T, path, name string) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ts []safetensors.Tensor
	found := false
	for _, info := range f.Tensors() {
		if info.Name == name {
			found = true
			continue
		}
		b, err := f.Bytes(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, safetensors.Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: slices.Clone(b)})
	}
	if !found {
		t.Fatalf("%s: no tensor %s", path, name)
	}
	if err := safetensors.WriteFile(path, ts, f.Metadata()); err != nil {
		t.Fatal(err)
	}
}
