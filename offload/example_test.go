package offload_test

import (
	"context"
	"fmt"
	"os"

	"github.com/moesys/moesys/offload"
)

// Serving one layer's experts from an experts file under a budget of one
// slot: the first use of an expert reads it, the second hits the cache, and
// a third expert evicts the least recently used.
func Example() {
	dir, _ := os.MkdirTemp("", "offload-example-")
	defer os.RemoveAll(dir)
	var blocks []offload.BlockSpec
	for e := range 3 {
		name := fmt.Sprintf("layer0.expert%d.w", e)
		blocks = append(blocks, offload.BlockSpec{Layer: 0, Expert: e, Tensors: []offload.TensorRef{{Name: name, DType: "U8", Shape: []int{8}, Bytes: 8}}})
	}
	read := func(name string) ([]byte, error) { return []byte(name[7:15]), nil } // "expert0." ...
	if _, err := offload.WriteLayout(dir, blocks, read); err != nil {
		fmt.Println(err)
		return
	}
	lay, _ := offload.OpenLayout(dir)
	store, _ := offload.OpenFileStore(lay.Path)
	defer store.Close()
	reader := offload.NewReader(store, offload.ReaderConfig{Depth: 8})
	defer reader.Close()
	budget := lay.SlotBytes() // one slot's worth
	pool, _ := offload.NewSlotPool(offload.PoolConfig{Slots: int(budget / lay.SlotBytes()), SlotBytes: lay.SlotBytes(), Stats: reader.Stats()})
	defer pool.Close()

	ctx := context.Background()
	for _, e := range []int{1, 1, 2} {
		slot, cached, err := pool.Acquire(ctx, offload.Key{Layer: 0, Expert: e})
		if err != nil {
			fmt.Println(err)
			return
		}
		if !cached {
			b, _ := lay.Block(0, e)
			reader.Submit(ctx, offload.Request{Dst: slot.Bytes()[:b.Padded()], Off: b.Offset, Done: slot.Filled})
		}
		if err := slot.Wait(ctx); err != nil {
			fmt.Println(err)
		}
		fmt.Printf("expert %d cached %v: %s\n", e, cached, slot.Bytes()[:8])
		slot.Release()
	}
	c := reader.Stats().Snapshot()
	fmt.Printf("%d reads, %d bytes, %d hits, %d misses, %d evictions\n", c.Reads, c.BytesRead, c.Hits, c.Misses, c.Evictions)
	// Output:
	// expert 1 cached false: expert1.
	// expert 1 cached true: expert1.
	// expert 2 cached false: expert2.
	// 2 reads, 8192 bytes, 1 hits, 2 misses, 1 evictions
}
