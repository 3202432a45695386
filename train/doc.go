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
// rename): Hugging Face weights, the optimizer state and trainer.json
// (checkpoint.go); a parallel run writes them sharded by rank, and any rank
// count resumes any checkpoint (checkpoint_shard.go).
//
// The rest, one concept per file:
//
//   - trainer.go, run.go: Trainer (a step: micro-batches, the global
//     gradient norm and clipping, AdamW, bf16 masters) and Run (the loop,
//     evaluation, checkpoints, signals).
//
//   - parallel.go: data + expert parallelism over a dist.Comm (tokens to
//     their experts by all-to-all, dense gradients summed in fused buckets).
//
//   - zero.go: the dense parameters sharded ZeRO-3 style, gathered one
//     layer ahead (path 1 of SE-MoE's 2D prefetch).
//
//   - storage.go, storage_plan.go, storage_tier.go: hierarchical storage of
//     the routed experts (SSD tier, LFU RAM cache, a compute tier of two
//     layers' slots; path 2 of 2D prefetch), bit-identical to training in
//     RAM, on one process or every rank.
//
//   - multitask.go, elastic.go: multi-task runs with task experts and the
//     elastic placement of ranks by workload.
//
//   - embed.go: the embedding table split by columns over the ranks.
//
//   - pregate.go: converting a checkpoint to pre-gated MoE and measuring
//     how its routing agrees with the original.
//
//     corpus, err := train.LoadCorpus(ctx, train.DataSpec{}, os.Stdin)
//     if err != nil { return err }
//     if err := corpus.Check(T); err != nil { return err }
//     batcher, err := train.NewBatcher(corpus.Train, B, T, seed)
//     if err != nil { return err }
//     inputs, targets := make([]int32, B*T), make([]int32, B*T)
//     batcher.Batch(step, inputs, targets) // (B, T) each
//     val, err := train.ValBatches(corpus.Val, B, T, 20)
package train
