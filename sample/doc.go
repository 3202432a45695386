// Package sample turns a row of logits into the next token id and decides
// when a generation stops. It is the last step of the decode loop
// (… → norm → lm_head → sample) and pure: the same Params, Seed, logits and
// context give the same tokens on every run and machine.
//
// A Sampler (New) applies, in this order:
//
//	repetition penalty → temperature → top-k → top-p → min-p → draw
//
// which is the order of Hugging Face transformers (the penalty is a logits
// processor, then the temperature, top-k, top-p and min-p warpers). The
// checkpoints moesys serves come with generation_config.json values tuned
// under those semantics, so the same numbers give the same distribution
// here. In particular temperature comes before top-p, so the nucleus is
// measured on the tempered distribution that is actually sampled from
// (llama.cpp's default chain applies temperature last, so the same top_p
// keeps a different set there). Top-k and top-p see the order of the
// logits; min-p is relative to the top token, so it never removes the top
// token and its place in the chain only decides which survivors it thins.
// Temperature 0 is greedy: the argmax after the penalty, ties to the lowest
// id, no randomness.
//
// Ties are broken towards lower token ids everywhere (greedy, top-k's
// boundary, top-p's prefix), so results never depend on sort stability.
// NaN logits are treated as −Inf (masked tokens); +Inf as the largest
// float32. Next never modifies the caller's logits. DistributionRef is the
// slow twin that computes the distribution Next draws from; tests hold the
// two together.
//
// A Stopper (NewStopper) watches the generated ids and text pieces for EOS
// ids, stop strings (possibly spanning pieces; text that may begin one is
// held back so clients never see half a stop string) and MaxTokens.
//
//	p := sample.Defaults()
//	p.Temperature, p.TopP, p.Seed = 0.7, 0.9, 42
//	p.StopStrings, p.EOS, p.MaxTokens = []string{"\nUser:"}, []int32{eosID}, 256
//	s, err := sample.New(p)
//	if err != nil {
//		return err // wraps sample.ErrParams
//	}
//	stop := sample.NewStopper(p)
//	for {
//		logits := forward(ids)     // (V) scores of the last position
//		id := s.Next(logits, ids)  // ids: prompt + generated, for the penalty
//		ids = append(ids, id)
//		text, done := stop.Push(id, decode(id))
//		send(text)
//		if done {
//			break // stop.Reason() says why
//		}
//	}
package sample
