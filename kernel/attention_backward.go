package kernel

import "fmt"

// attnBwdRows is the number of query rows per backward tile: the tile's
// probabilities (rows x visible keys) are recomputed from the saved lse.
const attnBwdRows = 64

// AttentionBackwardWorkspace returns the float32 count AttentionBackward needs.
func AttentionBackwardWorkspace(T, S, H, G, Dh int) int {
	return G * (2*attnBwdRows*S + T)
}

// AttentionBackward is the gradient of Attention. Given dout (T, H, Dh), the
// forward inputs q, k, v, its output out and its lse (H, T), it writes dq
// (T, H, Dh) and dk, dv (S, G, Dh) (all overwritten). Probabilities are
// recomputed tile by tile (Flash-Attention style), so memory is
// O(rows x S) per KV head, not O(T x S) per head. ws holds
// AttentionBackwardWorkspace(T, S, H, G, Dh) floats. Parallel over KV heads;
// each GEMM is parallel when there is a single KV head.
func AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse []float32, T, S, H, G, Dh, pos0, window int, scale float32, ws []float32) {
	if T < 0 || S < 0 || H <= 0 || G <= 0 || Dh <= 0 || H%G != 0 || pos0 < 0 || pos0+T > S ||
		len(dq) < T*H*Dh || len(dout) < T*H*Dh || len(q) < T*H*Dh || len(out) < T*H*Dh || len(lse) < H*T ||
		len(dk) < S*G*Dh || len(dv) < S*G*Dh || len(k) < S*G*Dh || len(v) < S*G*Dh ||
		len(ws) < AttentionBackwardWorkspace(T, S, H, G, Dh) {
		panic(fmt.Sprintf("kernel.AttentionBackward: bad shapes T=%d S=%d H=%d G=%d Dh=%d pos0=%d", T, S, H, G, Dh, pos0))
	}
	ldq, ldkv := H*Dh, G*Dh
	rep := H / G
	per := 2*attnBwdRows*S + T
	parallel(G, func(g int) {
		w := ws[g*per : (g+1)*per]
		p, dp, di := w[:attnBwdRows*S], w[attnBwdRows*S:2*attnBwdRows*S], w[2*attnBwdRows*S:]
		for s := 0; s < S; s++ {
			clear(dk[s*ldkv+g*Dh : s*ldkv+(g+1)*Dh])
			clear(dv[s*ldkv+g*Dh : s*ldkv+(g+1)*Dh])
		}
		kg, vg := k[g*Dh:], v[g*Dh:]
		dkg, dvg := dk[g*Dh:], dv[g*Dh:]
		for h := g * rep; h < (g+1)*rep; h++ {
			// di[t] = dout[t,h,:] . out[t,h,:], the softmax backward's row term.
			for t := 0; t < T; t++ {
				o := t*ldq + h*Dh
				di[t] = rowDot(dout[o:o+Dh], out[o:o+Dh])
			}
			for t0 := 0; t0 < T; t0 += attnBwdRows {
				t1 := min(T, t0+attnBwdRows)
				br := t1 - t0
				lo := 0
				if window > 0 {
					lo = max(0, pos0+t0-window+1)
				}
				hi := min(S-1, pos0+t1-1)
				n := hi - lo + 1
				qb, dob, dqb := q[t0*ldq+h*Dh:], dout[t0*ldq+h*Dh:], dq[t0*ldq+h*Dh:]
				// P = exp(scale * Q K^T - lse), zero outside each row's window.
				Gemm(false, true, br, n, Dh, scale, qb, ldq, kg[lo*ldkv:], ldkv, 0, p, n)
				attnProbRows(p[:br*n], lse[h*T+t0:h*T+t1], br, n, pos0+t0-lo, window)
				// dV += P^T dO; dP = dO V^T.
				Gemm(true, false, n, Dh, br, 1, p, n, dob, ldq, 1, dvg[lo*ldkv:], ldkv)
				Gemm(false, true, br, n, Dh, 1, dob, ldq, vg[lo*ldkv:], ldkv, 0, dp, n)
				// dS = P * (dP - di), in place in dp.
				for i := 0; i < br; i++ {
					d := di[t0+i]
					pr, dr := p[i*n:(i+1)*n], dp[i*n:(i+1)*n]
					for j := range dr {
						dr[j] = pr[j] * (dr[j] - d)
					}
				}
				// dQ = scale * dS K; dK += scale * dS^T Q.
				Gemm(false, false, br, Dh, n, scale, dp, n, kg[lo*ldkv:], ldkv, 0, dqb, ldq)
				Gemm(true, false, n, Dh, br, scale, dp, n, qb, ldq, 1, dkg[lo*ldkv:], ldkv)
			}
		}
	})
}

// attnProbRows turns scaled scores into probabilities over a tile of rows x n
// (row-major, row stride n) whose row i has log-sum-exp lse[i]:
// p[i][j] = e^(p[i][j] − lse[i]) for the columns row i sees, j ≤ diag+i and,
// with window > 0, j > diag+i−window (column j is key lo+j of
// AttentionBackward's tile, diag the column of row 0's own position), and 0
// for the others.
func attnProbRows(p, lse []float32, rows, n, diag, window int) {
	if len(p) < rows*n || len(lse) < rows {
		panic(fmt.Sprintf("kernel.attnProbRows: rows=%d n=%d need len(p) ≥ rows·n, len(lse) ≥ rows; have p %d, lse %d", rows, n, len(p), len(lse)))
	}
	if useNative() && rows*n >= nativeMinElems {
		nativeExpRows(p, rows, n, lse, diag, window)
		return
	}
	for i := 0; i < rows; i++ {
		hi := min(n-1, diag+i)
		lo := 0
		if window > 0 {
			lo = max(0, diag+i-window+1)
		}
		row := p[i*n : (i+1)*n]
		l := lse[i]
		for j := range row {
			if j < lo || j > hi {
				row[j] = 0
			} else {
				row[j] = expPoly(row[j] - l)
			}
		}
	}
}
