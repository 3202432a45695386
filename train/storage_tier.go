package train

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moesys/moesys/model"
)

// layerTier is one slot of the compute tier: buffers shaped like one MoE
// layer's experts (weights, gradients, bf16 copies), in anonymous
// mappings, which the MoE layers bound to it (model.BindExpertBuffers)
// share: a layer's routed experts are copied in from their records when it
// is reached. Two slots, layer i computing in slot i%2, hold the current
// layer and the next.
type layerTier struct {
	maps [][]byte
	bufs model.ExpertBuffers
}

func mapBytes(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("train: storage: compute tier: mmap %d bytes: %w", n, err)
	}
	return b, nil
}

// newLayerTier maps one slot: fused weights and gradients of w13 and w2
// values, and their bf16 copies when bf16.
func newLayerTier(w13, w2 int, bf16 bool) (*layerTier, error) {
	t := &layerTier{}
	var err error
	t.bufs = model.ExpertBuffers{W13: mapSlice[float32](t, w13, &err), G13: mapSlice[float32](t, w13, &err),
		W2: mapSlice[float32](t, w2, &err), G2: mapSlice[float32](t, w2, &err)}
	want := 4
	if bf16 {
		t.bufs.B13, t.bufs.B2 = mapSlice[uint16](t, w13, &err), mapSlice[uint16](t, w2, &err)
		want = 6
	}
	if len(t.maps) != want {
		t.free()
		return nil, fmt.Errorf("train: storage: compute tier: cannot map a layer's expert buffers (%d bytes): %v", 8*(w13+w2), err)
	}
	return t, nil
}

// mapSlice maps n values of T for t, or records the first failure in *err
// and returns nil.
func mapSlice[T float32 | uint16](t *layerTier, n int, err *error) []T {
	var z T
	b, e := mapBytes(int(unsafe.Sizeof(z)) * n)
	if e == nil && b == nil {
		e = fmt.Errorf("an empty buffer")
	}
	if e != nil {
		if *err == nil {
			*err = e
		}
		return nil
	}
	t.maps = append(t.maps, b)
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

// resident returns how many bytes of the layer's buffers are in memory.
func (t *layerTier) resident() int64 {
	var n int64
	page := os.Getpagesize()
	for _, b := range t.maps {
		vec := make([]byte, (len(b)+page-1)/page)
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			continue // a figure only: this mapping uncounted
		}
		for _, v := range vec {
			if v&1 != 0 {
				n += int64(page)
			}
		}
	}
	return n
}

func (t *layerTier) free() {
	for _, b := range t.maps {
		unix.Munmap(b)
	}
	t.maps = nil
}
