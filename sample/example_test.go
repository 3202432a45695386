package sample_test

import (
	"fmt"
	"strings"

	"github.com/moesys/moesys/sample"
)

// Greedy decoding with a repetition penalty: token 0 led, but it is in the
// context, so its logit 4 becomes 4/2 = 2 and token 1 (3) wins.
func ExampleSampler_Next() {
	p := sample.Defaults()
	p.Temperature, p.RepetitionPenalty = 0, 2
	s, err := sample.New(p)
	if err != nil {
		panic(err)
	}
	logits := []float32{4, 3, 0, -1}
	fmt.Println(s.Next(logits, nil), s.Next(logits, []int32{0}))
	// Output: 0 1
}

// The distribution a Sampler draws from, via the reference twin: top-k 2
// keeps tokens 2 and 3 of weights 3 and 1, renormalised to 3/4 and 1/4.
func ExampleDistributionRef() {
	p := sample.Defaults()
	p.TopK = 2
	ids, probs := sample.DistributionRef(p, []float32{-1, -2, 1.0986123, 0}, nil)
	fmt.Printf("%v %.3f\n", ids, probs)
	// Output: [2 3] [0.750 0.250]
}

func ExampleParams_Validate() {
	p := sample.Defaults()
	p.TopP = 0
	fmt.Println(p.Validate())
	// Output: sample: invalid params: top_p 0 is outside (0, 1] (1 turns it off; start from sample.Defaults())
}

// A stop string split across streamed pieces: the client sees everything
// before it and nothing of it.
func ExampleStopper() {
	p := sample.Defaults()
	p.StopStrings = []string{"\nUser:"}
	stop := sample.NewStopper(p)
	var out []string
	for i, piece := range []string{"Sure, 2+2 is 4.", "\nUs", "er:", " thanks"} {
		text, done := stop.Push(int32(i), piece)
		out = append(out, fmt.Sprintf("%q", text))
		if done {
			break
		}
	}
	fmt.Println(strings.Join(out, " "), stop.Reason())
	// Output: "Sure, 2+2 is 4." "" "" stop_string
}
