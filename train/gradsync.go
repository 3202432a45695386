package train

import (
	"context"
	"fmt"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/optim"
)

// defaultBucketBytes is the size of a fused gradient all-reduce.
const defaultBucketBytes = 4 << 20

// gradSync sums the replicated parameters' gradients over the ranks with
// fused all-reduces (fusion communication): small gradients are packed
// into buckets of up to bucket elements and reduced together; a gradient
// larger than a bucket is reduced in place, in bucket-sized pieces. Many
// small tensors never go out one by one.
type gradSync struct {
	comm   dist.Comm
	params []*optim.Param
	buf    []float32
}

func newGradSync(c dist.Comm, params []*optim.Param, bucketBytes int) *gradSync {
	return &gradSync{comm: c, params: params, buf: make([]float32, max(bucketBytes/4, 1))}
}

// reduce sums every parameter's gradient over the ranks.
func (g *gradSync) reduce(ctx context.Context) error {
	n := len(g.buf)
	var packed []*optim.Param
	used := 0
	flush := func() error {
		if used == 0 {
			return nil
		}
		if err := g.comm.AllReduce(ctx, g.buf[:used]); err != nil {
			return fmt.Errorf("gradients over the ranks: %w", err)
		}
		at := 0
		for _, p := range packed {
			at += copy(p.G, g.buf[at:])
		}
		packed, used = packed[:0], 0
		return nil
	}
	for _, p := range g.params {
		if len(p.G) > n {
			for lo := 0; lo < len(p.G); lo += n {
				if err := g.comm.AllReduce(ctx, p.G[lo:min(lo+n, len(p.G))]); err != nil {
					return fmt.Errorf("gradient %s over the ranks: %w", p.Name, err)
				}
			}
			continue
		}
		if used+len(p.G) > n {
			if err := flush(); err != nil {
				return err
			}
		}
		copy(g.buf[used:], p.G)
		used += len(p.G)
		packed = append(packed, p)
	}
	return flush()
}
