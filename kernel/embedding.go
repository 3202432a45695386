package kernel

import (
	"fmt"
	"math"
)

// Embedding gathers rows of table (V, D) for the token ids (T): out[t] =
// table[ids[t]], out (T, D). V is len(table)/D. An id outside [0, V) panics:
// ids from users or tokenizers must be validated by the caller, which can
// return an error; at this level a bad id is a programmer error.
func Embedding(out, table []float32, ids []int32, T, D int) {
	V := checkEmbedding("Embedding", len(out), len(table), ids, T, D)
	for t, id := range ids[:T] {
		checkID("Embedding", t, id, V)
		copy(out[t*D:t*D+D], table[int(id)*D:int(id)*D+D])
	}
}

// EmbeddingBF16 is Embedding for a table stored as bf16 bit patterns (V, D),
// widened exactly to float32.
func EmbeddingBF16(out []float32, table []uint16, ids []int32, T, D int) {
	V := checkEmbedding("EmbeddingBF16", len(out), len(table), ids, T, D)
	for t, id := range ids[:T] {
		checkID("EmbeddingBF16", t, id, V)
		src := table[int(id)*D : int(id)*D+D]
		dst := out[t*D : t*D+D]
		dst = dst[:len(src)]
		for i, b := range src {
			dst[i] = math.Float32frombits(uint32(b) << 16)
		}
	}
}

// EmbeddingBackward scatter-adds dout (T, D) into dtable (V, D): dtable[ids[t]]
// += dout[t], in token order (repeated ids accumulate; the order makes the
// result deterministic). V is len(dtable)/D.
func EmbeddingBackward(dtable, dout []float32, ids []int32, T, D int) {
	V := checkEmbedding("EmbeddingBackward", len(dout), len(dtable), ids, T, D)
	for t, id := range ids[:T] {
		checkID("EmbeddingBackward", t, id, V)
		dst := dtable[int(id)*D : int(id)*D+D]
		src := dout[t*D : t*D+D]
		src = src[:len(dst)]
		for i, g := range src {
			dst[i] += g
		}
	}
}

// checkEmbedding checks the shapes and returns V = tableLen/D.
func checkEmbedding(op string, rowsLen, tableLen int, ids []int32, T, D int) int {
	if T < 0 || D < 1 || rowsLen < T*D || len(ids) < T || tableLen < D {
		panic(fmt.Sprintf("kernel.%s: T=%d D=%d need D ≥ 1, len(ids) ≥ T, the (T, D) side ≥ T·D, the table ≥ one row of D; have ids %d, rows %d, table %d",
			op, T, D, len(ids), rowsLen, tableLen))
	}
	return tableLen / D
}

func checkID(op string, t int, id int32, V int) {
	if id < 0 || int(id) >= V {
		panic(fmt.Sprintf("kernel.%s: ids[%d]=%d outside [0, V=%d)", op, t, id, V))
	}
}
