// Package train trains moesys models on one machine or many: the training
// loop (forward, backward, optimizer step, evaluation), the data pipeline and
// checkpoints.
//
// Data (data.go): LoadCorpus reads text (the Go standard library sources by
// default, or a file, a directory or standard input) as byte tokens and holds
// out its end for validation; Batcher draws training batches that depend only
// on (seed, step), so a resumed run sees the same batches; ValBatches cuts the
// validation split into fixed windows.
//
// Checkpoints are safetensors files written atomically (temp file, fsync,
// rename).
//
//	corpus, err := train.LoadCorpus(ctx, train.DataSpec{}, os.Stdin)
//	if err != nil { return err }
//	if err := corpus.Check(T); err != nil { return err }
//	batcher, err := train.NewBatcher(corpus.Train, B, T, seed)
//	if err != nil { return err }
//	inputs, targets := make([]int32, B*T), make([]int32, B*T)
//	batcher.Batch(step, inputs, targets) // (B, T) each
//	val, err := train.ValBatches(corpus.Val, B, T, 20)
package train
