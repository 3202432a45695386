// Package serve is moesys' HTTP inference server: the OpenAI API
// (POST /v1/completions, POST /v1/chat/completions, GET /v1/models) over
// one model, with continuous batching, plus GET /healthz and GET /metrics
// (Prometheus text format).
//
// Engine is the batching core: one goroutine runs model.Batch passes over
// every running sequence, a decode step each, together with chunks of the
// prompts of newly admitted requests (at most EngineConfig.PrefillChunk
// prompt tokens a pass). Sequences join whenever one of the MaxSeqs
// preallocated KV caches (model.Session) is free and leave the moment
// they end (EOS, stop string, max_tokens, full context) or their request
// goes away (client disconnect, timeout); requests beyond the slots wait
// in a queue of at most MaxQueue, and past it Submit fails with
// ErrQueueFull (HTTP 429 with Retry-After). With an offloaded model each
// pass's MoE blocks fetch the union of the experts the batch routes to.
//
// Server decodes and validates requests (decode.go: wrong types, unknown
// fields' types and unsupported options answer 400 with OpenAI's error
// object; an unknown model 404; a body over the limit 413; a prompt that
// fills the context 400 context_length_exceeded), renders chat
// conversations with the checkpoint's Jinja chat template (ChatTemplate,
// on gonja; DefaultTemplate for checkpoints without one), submits the
// token ids and answers in one JSON object or as server-sent events ending
// with "data: [DONE]".
//
//	srv, err := serve.New(serve.Config{Model: m, Tokenizer: tok, Name: "tiny",
//		Engine: serve.EngineConfig{MaxSeqs: 8, MaxQueue: 64, Context: 2048}})
//	if err != nil {
//		return err
//	}
//	hs := &http.Server{Addr: "127.0.0.1:8080", Handler: srv.Handler()}
//	go hs.ListenAndServe()
//	// on SIGTERM: stop taking requests, let the running ones finish
//	srv.Drain()
//	hs.Shutdown(ctx) // waits for the in-flight handlers, up to ctx
//	srv.Close()      // ends whatever is still running
package serve
