package sample

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Params)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(*Params) {}, ""},
		{"greedy", func(p *Params) { p.Temperature = 0 }, ""},
		{"all filters", func(p *Params) {
			p.Temperature, p.TopK, p.TopP, p.MinP, p.RepetitionPenalty = 0.7, 40, 0.9, 0.05, 1.1
			p.MaxTokens, p.StopStrings, p.EOS = 10, []string{"\n"}, []int32{0, 2}
		}, ""},
		{"edge values", func(p *Params) { p.TopP, p.MinP, p.RepetitionPenalty = 1e-9, 1, 0.5 }, ""},
		{"negative temperature", func(p *Params) { p.Temperature = -0.1 }, "temperature -0.1 is negative"},
		{"NaN temperature", func(p *Params) { p.Temperature = math.NaN() }, "temperature NaN is not a finite number"},
		{"infinite temperature", func(p *Params) { p.Temperature = math.Inf(1) }, "temperature +Inf is not a finite number"},
		{"negative top_k", func(p *Params) { p.TopK = -1 }, "top_k -1 is negative"},
		{"zero top_p", func(p *Params) { p.TopP = 0 }, "top_p 0 is outside (0, 1]"},
		{"top_p above 1", func(p *Params) { p.TopP = 1.5 }, "top_p 1.5 is outside (0, 1]"},
		{"NaN top_p", func(p *Params) { p.TopP = math.NaN() }, "top_p NaN is outside"},
		{"negative min_p", func(p *Params) { p.MinP = -0.01 }, "min_p -0.01 is outside [0, 1]"},
		{"min_p above 1", func(p *Params) { p.MinP = 2 }, "min_p 2 is outside [0, 1]"},
		{"zero penalty", func(p *Params) { p.RepetitionPenalty = 0 }, "repetition_penalty 0 must be a finite number > 0"},
		{"infinite penalty", func(p *Params) { p.RepetitionPenalty = math.Inf(1) }, "repetition_penalty +Inf"},
		{"negative max_tokens", func(p *Params) { p.MaxTokens = -5 }, "max_tokens -5 is negative"},
		{"empty stop string", func(p *Params) { p.StopStrings = []string{"a", ""} }, "stop string 1 is empty"},
		{"negative eos", func(p *Params) { p.EOS = []int32{2, -1} }, "eos id -1 (entry 1) is negative"},
		{"zero value", func(p *Params) { *p = Params{} }, "top_p 0 is outside"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Defaults()
			c.edit(&p)
			err := p.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := New(p); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, c.want)
			}
			if !errors.Is(err, ErrParams) {
				t.Errorf("Validate() = %v does not wrap ErrParams", err)
			}
			if s, err2 := New(p); s != nil || err2 == nil {
				t.Errorf("New accepted invalid params")
			}
		})
	}
}

// Validate lists every problem, not just the first.
func TestValidateReportsAll(t *testing.T) {
	err := Params{Temperature: -1, TopP: 2, RepetitionPenalty: 1}.Validate()
	for _, want := range []string{"temperature", "top_p"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
}
