package offload

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Benchmark sizes: one op reads benchBlocks expert blocks of benchBlock
// bytes (a small real expert), so -benchtime 1x reads 16 MiB per case.
const (
	benchBlock  = 1 << 20
	benchBlocks = 16
)

// BenchmarkReadLayer reads a layer's worth of expert blocks through a
// Reader at queue depth 1 and 8: from a file with O_DIRECT (the disk, not
// the page cache, when the filesystem allows it) and over a simulated
// 25 GB/s link (which the reads should come close to filling).
func BenchmarkReadLayer(b *testing.B) {
	path := filepath.Join(b.TempDir(), ExpertsFile)
	if err := os.WriteFile(path, pattern(benchBlocks*benchBlock), 0o644); err != nil {
		b.Fatal(err)
	}
	fs, err := OpenFileStore(path)
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	if !fs.Direct() {
		b.Log(fs.Note())
	}
	mem := NewMemStore(pattern(benchBlocks * benchBlock))
	slots, err := HostMemory{}.Alloc(benchBlocks * benchBlock)
	if err != nil {
		b.Fatal(err)
	}
	defer HostMemory{}.Free(slots)
	for _, store := range []struct {
		name string
		s    Store
	}{{"file", fs}, {"simlink-25GBps", NewSimLink(mem, 25, 0)}} {
		for _, depth := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/depth=%d", store.name, depth), func(b *testing.B) {
				r := NewReader(store.s, ReaderConfig{Depth: depth})
				defer r.Close()
				ps := make([]*Pending, benchBlocks)
				b.SetBytes(benchBlocks * benchBlock)
				b.ReportAllocs()
				for b.Loop() {
					for i := range ps {
						off := i * benchBlock
						ps[i] = r.Submit(context.Background(), Request{Dst: slots[off : off+benchBlock], Off: int64(off)})
					}
					for _, p := range ps {
						if err := p.Wait(context.Background()); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
