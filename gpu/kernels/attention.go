package kernels

import (
	"fmt"

	"github.com/moesys/moesys/gpu/cuda"
)

// Attention limits and tuning, as in attention.cu.
const (
	attMaxDh    = 256 // head dim: a lane keeps Dh/32 output dims in registers
	attMaxWarps = 8   // queries per block, one warp each
	attMinWarps = 4   // warps per block even for fewer queries: they share the K/V staging
	// attMinSplitKeys is the fewest keys a split streams: below it the
	// partials' write and merge cost more than the extra blocks gain.
	attMinSplitKeys = 256
	// attBlocksPerSM is the blocks per multiprocessor that split-K aims
	// for when the queries alone give fewer (decode).
	attBlocksPerSM = 2
)

// attnGeom is Attention's launch plan.
type attnGeom struct {
	kc       int // keys per shared-memory chunk
	nw       int // warps (queries) per block
	qblocks  int // grid.y: blocks of queries per KV head
	nsplit   int // grid.x: key-range splits; 1 writes out directly
	splitLen int // keys per split (a multiple of kc)
	kbase    int // first key any query sees; splits start here
	shared   int // dynamic shared memory bytes
}

// attnPlan chooses Attention's geometry: one warp per (token, head) query,
// the queries of one KV head grouped into blocks of nw, and the visible key
// range split so that decode (few queries) still fills the GPU, within the
// partials workspace.
func attnPlan(T, S, H, G, Dh, pos0, window, sms int, wsBytes int64) attnGeom {
	var g attnGeom
	g.kc = 32
	if Dh > 128 {
		g.kc = 16
	}
	nq := T * (H / G)
	g.nw = min(attMaxWarps, max(attMinWarps, nq))
	g.qblocks = (nq + g.nw - 1) / g.nw
	if window > 0 {
		g.kbase = max(0, pos0-window+1)
	}
	span := pos0 + T - g.kbase // keys from kbase to the last query's position
	g.nsplit = 1
	if base := g.qblocks * G; base < attBlocksPerSM*sms {
		g.nsplit = (attBlocksPerSM*sms + base - 1) / base
	}
	g.nsplit = min(g.nsplit, max(1, span/attMinSplitKeys))
	perSplit := int64(T) * int64(H) * int64(Dh+2) * 4
	if g.nsplit > 1 && perSplit*int64(g.nsplit) > wsBytes {
		g.nsplit = max(1, int(wsBytes/perSplit))
	}
	g.splitLen = (span + g.nsplit - 1) / g.nsplit
	g.splitLen = max(g.kc, (g.splitLen+g.kc-1)/g.kc*g.kc)
	g.nsplit = (span + g.splitLen - 1) / g.splitLen
	g.shared = (g.kc*(Dh+1) + g.kc*Dh + g.nw*Dh + g.nw*g.kc) * 4
	return g
}

// Attention queues causal softmax attention of T queries over a KV cache,
// as kernel.AttentionRef: query t (position pos0+t) of head h attends with
// KV head h/(H/G) to the keys j ≤ pos0+t and, when window > 0, with
// pos0+t−j < window (itself and the window−1 keys before it). Scores are
// scale·q·k; the online softmax and output sums are float32 (the CPU
// reference sums in float64: expect relative differences around 1e-6 with
// f32 Act, and the bf16 rounding of the cache and output with bf16).
//
// Shapes: out (T, H·Dh) Act; q (T, H·Dh) f32; kc, vc (S, G·Dh) Act, keys
// and values at positions 0..S−1; pos0+T ≤ S; H a multiple of G; Dh ≤ 256.
// Few queries over many keys (decode) split the key range across blocks
// and merge the partials (flash-decoding) through the Set's workspace.
func (k *Set) Attention(s *cuda.Stream, out, q, kc, vc cuda.DevPtr, T, S, H, G, Dh, pos0, window int, scale float32) error {
	const op = "Attention"
	if err := checkDims(op, "T", T, "S", S, "H", H, "G", G, "Dh", Dh, "pos0", pos0, "window", window); err != nil {
		return err
	}
	if H < 1 || G < 1 || H%G != 0 || Dh < 1 || pos0+T > S {
		return errorf(op, "T=%d S=%d H=%d G=%d Dh=%d pos0=%d: need H a multiple of G ≥ 1, Dh ≥ 1, pos0+T ≤ S", T, S, H, G, Dh, pos0)
	}
	if Dh > attMaxDh {
		return fmt.Errorf("kernels.%s: head dim %d exceeds %d: %w", op, Dh, attMaxDh, ErrUnsupported)
	}
	if T == 0 {
		return nil
	}
	g := attnPlan(T, S, H, G, Dh, pos0, window, k.sms, k.wsBytes)
	if g.qblocks > maxGridYZ || G > maxGridYZ {
		return fmt.Errorf("kernels.%s: T=%d H=%d G=%d: %d query blocks per KV head exceed the grid's %d: %w", op, T, H, G, g.qblocks, maxGridYZ, ErrUnsupported)
	}
	grid := cuda.Dim3{X: g.nsplit, Y: g.qblocks, Z: G}
	block := cuda.Dim3{X: g.nw * 32}
	if err := k.launch(op, s, "attn_split", grid, block, g.shared,
		out, k.ws, q, kc, vc, T, S, H, G, Dh, pos0, window, scale, g.nsplit, g.splitLen, g.kbase); err != nil {
		return err
	}
	if g.nsplit == 1 {
		return nil
	}
	return k.launch(op, s, "attn_combine", cuda.Dim3{X: T * H}, cuda.Dim3{X: rowBlock(Dh)}, 0, out, k.ws, T*H, Dh, g.nsplit)
}
