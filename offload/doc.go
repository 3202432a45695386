// Package offload holds expert weights outside the compute tier and moves
// them in on demand. This first part defines the on-disk layout the
// offloading engine reads: every (layer, expert) block — the expert's
// tensors back to back — starts on a 4 KiB boundary of one experts file and
// is padded to a multiple of 4 KiB, so one O_DIRECT read fetches one expert
// into an aligned slot; an index (JSON) maps blocks and tensors to offsets.
// The package knows nothing of models: callers name the blocks.
//
//	err := offload.WriteLayout(dir, blocks, read)   // blocks: which tensors go together
//	lay, err := offload.OpenLayout(dir)
//	b := lay.Block(layer, expert)                    // offset, size, tensors
package offload
