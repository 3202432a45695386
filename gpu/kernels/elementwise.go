package kernels

import "github.com/moesys/moesys/gpu/cuda"

// Embed queues out[t] = table[ids[t]] widened to f32, as kernel.Embedding
// and kernel.EmbeddingBF16 (exact). Shapes: out (T, D) f32; table (V, D)
// of wt (F32 or BF16); ids (T) int32. Every id must be below V, which the
// call does not receive (EmbedChecked does); a negative id gives a zero row.
func (k *Set) Embed(s *cuda.Stream, out, table cuda.DevPtr, wt cuda.DataType, ids cuda.DevPtr, T, D int) error {
	return k.embed("Embed", s, out, table, wt, ids, T, D, -1)
}

// EmbedChecked is Embed with the table's row count V: an id outside [0, V)
// gives a zero row instead of reading past the table.
func (k *Set) EmbedChecked(s *cuda.Stream, out, table cuda.DevPtr, wt cuda.DataType, V int, ids cuda.DevPtr, T, D int) error {
	if err := checkDims("EmbedChecked", "V", V); err != nil {
		return err
	}
	return k.embed("EmbedChecked", s, out, table, wt, ids, T, D, V)
}

func (k *Set) embed(op string, s *cuda.Stream, out, table cuda.DevPtr, wt cuda.DataType, ids cuda.DevPtr, T, D, V int) error {
	if err := checkDims(op, "T", T, "D", D); err != nil {
		return err
	}
	if err := checkType(op, "table", wt, cuda.F32, cuda.BF16); err != nil {
		return err
	}
	if T == 0 || D == 0 {
		return nil
	}
	name := "embed_f32"
	if wt == cuda.BF16 {
		name = "embed_bf16"
	}
	return k.launch(op, s, name, cuda.Dim3{X: T}, cuda.Dim3{X: rowBlock(D)}, 0, out, table, ids, T, D, V)
}

// AddBias queues y[t] += b for every row t. Shapes: y (T, n) f32; b (n) f32.
func (k *Set) AddBias(s *cuda.Stream, y, b cuda.DevPtr, T, n int) error {
	const op = "AddBias"
	if err := checkDims(op, "T", T, "n", n); err != nil {
		return err
	}
	total := int64(T) * int64(n)
	if total == 0 {
		return nil
	}
	return k.launch(op, s, "add_bias", cuda.Dim3{X: flatGrid(total)}, cuda.Dim3{X: flatThreads}, 0, y, b, T, n)
}

// SwiGLU queues out = gate·up/(1+exp(−gate)), as kernel.SwiGLU (float32;
// CUDA's expf is within 2 ulp). Shapes: out (T, F) Act; gate, up (T, F) f32.
func (k *Set) SwiGLU(s *cuda.Stream, out, gate, up cuda.DevPtr, T, F int) error {
	const op = "SwiGLU"
	if err := checkDims(op, "T", T, "F", F); err != nil {
		return err
	}
	n := int64(T) * int64(F)
	if n == 0 {
		return nil
	}
	return k.launch(op, s, "swiglu", cuda.Dim3{X: flatGrid(n)}, cuda.Dim3{X: flatThreads}, 0, out, gate, up, n)
}

// KVAppend queues cache rows at..at+n−1 = rows, rounded to Act. Shapes:
// cache (MaxT, width) Act, MaxT ≥ at+n (not checked: the call does not
// receive MaxT); rows (n, width) f32. width is G·Dh.
func (k *Set) KVAppend(s *cuda.Stream, cache, rows cuda.DevPtr, at, n, width int) error {
	const op = "KVAppend"
	if err := checkDims(op, "at", at, "n", n, "width", width); err != nil {
		return err
	}
	total := int64(n) * int64(width)
	if total == 0 {
		return nil
	}
	return k.launch(op, s, "kv_append", cuda.Dim3{X: flatGrid(total)}, cuda.Dim3{X: flatThreads}, 0, cache, rows, at, n, width)
}

// Gather queues out[r] = x[src[r]] (moe.Dispatch's permutation, with
// src[r] = RowSlot[r]/K). Shapes: out (R, D) Act; x (T, D) Act; src (R)
// int32, each in [0, T) (not checked: T is not received; GatherChecked
// checks); a negative src gives a zero row.
func (k *Set) Gather(s *cuda.Stream, out, x, src cuda.DevPtr, R, D int) error {
	return k.gather("Gather", s, out, x, src, R, D, -1)
}

// GatherChecked is Gather with x's row count T: a source outside [0, T)
// gives a zero row.
func (k *Set) GatherChecked(s *cuda.Stream, out, x, src cuda.DevPtr, R, D, T int) error {
	if err := checkDims("GatherChecked", "T", T); err != nil {
		return err
	}
	return k.gather("GatherChecked", s, out, x, src, R, D, T)
}

func (k *Set) gather(op string, s *cuda.Stream, out, x, src cuda.DevPtr, R, D, T int) error {
	if err := checkDims(op, "R", R, "D", D); err != nil {
		return err
	}
	if R == 0 || D == 0 {
		return nil
	}
	return k.launch(op, s, "gather", cuda.Dim3{X: R}, cuda.Dim3{X: rowBlock(D)}, 0, out, x, src, R, T, D)
}

// Combine queues x[t] += Σ_k w[t,k]·y[slotRow[t,k]] over the kept slots in
// k order, as moe.Combine: products and sums rounded separately, so the
// result equals the CPU's bit for bit. Shapes: x (T, D) f32; y (R, D) f32;
// slotRow (T, K) int32, −1 for a dropped slot, else below R (not checked:
// R is not received; CombineChecked checks); weights (T, K) f32.
func (k *Set) Combine(s *cuda.Stream, x, y, slotRow, weights cuda.DevPtr, T, K, D int) error {
	return k.combine("Combine", s, x, y, slotRow, weights, T, K, D, -1)
}

// CombineChecked is Combine with y's row count R: slots whose row is not
// below R are skipped like dropped ones.
func (k *Set) CombineChecked(s *cuda.Stream, x, y, slotRow, weights cuda.DevPtr, T, K, D, R int) error {
	if err := checkDims("CombineChecked", "R", R); err != nil {
		return err
	}
	return k.combine("CombineChecked", s, x, y, slotRow, weights, T, K, D, R)
}

func (k *Set) combine(op string, s *cuda.Stream, x, y, slotRow, weights cuda.DevPtr, T, K, D, R int) error {
	if err := checkDims(op, "T", T, "K", K, "D", D); err != nil {
		return err
	}
	if T == 0 || D == 0 || K == 0 {
		return nil
	}
	return k.launch(op, s, "combine", cuda.Dim3{X: T}, cuda.Dim3{X: rowBlock(D)}, 0, x, y, slotRow, weights, T, K, D, R)
}

// SigmoidGateAdd queues x[t] += sigmoid(gate[t])·y[t] (Qwen2-MoE's shared
// expert), as model's CPU path: the gate in float64 rounded once, then an
// unfused multiply and add, so it equals the CPU bit for bit. Shapes: x, y
// (T, D) f32; gate (T) f32.
func (k *Set) SigmoidGateAdd(s *cuda.Stream, x, y, gate cuda.DevPtr, T, D int) error {
	const op = "SigmoidGateAdd"
	if err := checkDims(op, "T", T, "D", D); err != nil {
		return err
	}
	if T == 0 || D == 0 {
		return nil
	}
	return k.launch(op, s, "sigmoid_gate_add", cuda.Dim3{X: T}, cuda.Dim3{X: rowBlock(D)}, 0, x, y, gate, T, D)
}

// Cast queues dst = src converted element-wise, n elements: f32 → bf16
// rounds to nearest even (tensor.F32ToBF16), bf16 → f32 is exact, equal
// types copy. dt and st are F32 or BF16; dst and src must not overlap.
func (k *Set) Cast(s *cuda.Stream, dst cuda.DevPtr, dt cuda.DataType, src cuda.DevPtr, st cuda.DataType, n int) error {
	const op = "Cast"
	if err := checkDims(op, "n", n); err != nil {
		return err
	}
	if err := checkType(op, "destination", dt, cuda.F32, cuda.BF16); err != nil {
		return err
	}
	if err := checkType(op, "source", st, cuda.F32, cuda.BF16); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	var name string
	switch {
	case dt == cuda.BF16 && st == cuda.F32:
		name = "cast_f32_bf16"
	case dt == cuda.F32 && st == cuda.BF16:
		name = "cast_bf16_f32"
	case dt == cuda.BF16:
		name = "copy_u16"
	default:
		name = "copy_u32"
	}
	return k.launch(op, s, name, cuda.Dim3{X: flatGrid(int64(n))}, cuda.Dim3{X: flatThreads}, 0, dst, src, int64(n))
}
