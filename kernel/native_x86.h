//go:build cgo && amd64

// native_x86.h: C entry points of the x86 SIMD kernels (AVX-512, AVX512_BF16
// in native_x86.c; AVX2+FMA in native_avx2.c).
// All functions are pure computations on caller-owned memory; none keeps a
// pointer after returning. Block sizes are fixed here and mirrored in Go.
#ifndef MOESYS_NATIVE_X86_H
#define MOESYS_NATIVE_X86_H
#include <stdint.h>

// B operand kinds of mk_gemm.
enum { MK_B_F32 = 0, MK_B_BF16 = 1, MK_B_BF16DOT = 2 };

// Micro-tile width in float32 columns, shared by every packed-B layout.
#define MK_NR 32

// mk_gemm computes C = alpha*op(A)*op(B) + beta*C for the M x N block of C
// starting at C. B is float32 (bkind MK_B_F32) or bf16 bits (MK_B_BF16: widened
// to f32 exactly; MK_B_BF16DOT: A rounded to bf16, VDPBF16PS). If packed != 0, B
// is a pre-packed panel buffer (see mk_pack_b) covering columns [0, N) and
// ldb is ignored; transB is ignored too.
void mk_gemm(int transA, int transB, long M, long N, long K, float alpha,
             const float* A, long lda, const void* B, int bkind, int packed, long ldb,
             float beta, float* C, long ldc);

// mk_pack_b writes op(B) (K x N) into NR-wide panels, zero-padded:
// f32 and bf16-exact kinds: dst float32 [ceil(N/NR)][K][NR];
// bf16-dot kind: dst uint16 [ceil(N/NR)][ceil(K/2)][NR][2].
void mk_pack_b(void* dst, int bkind, int transB, const void* B, long ldb, long K, long N);

// mk_gemv computes y = alpha*W*x + beta*y for rows [0, N) of W (N x K, row
// stride ldw), W float32 (bf16 = 0) or bf16 bits (bf16 = 1).
void mk_gemv(float* y, const void* W, int bf16, long ldw, const float* x, long N, long K,
             float alpha, float beta);

// mk_attn_pack_kv packs one KV head: K (S x Dh, row stride ld) into
// kp [ceil(S/NR)][Dh][NR] and V into vp [ceil(Dh/NR)][S][NR].
void mk_attn_pack_kv(float* kp, float* vp, const float* K, const float* V, long ld, long S, long Dh);

// mk_attn_rows computes causal attention for query rows [r0, r1) of one head
// against a packed KV head. q rows have stride ldq, out rows stride ldo; lse
// (may be NULL) gets log-sum-exp of the scaled scores per row.
void mk_attn_rows(float* out, long ldo, float* lse, const float* q, long ldq,
                  const float* kp, const float* vp, long S, long Dh, long r0, long r1,
                  long pos0, long window, float scale);

// mk_attn_decode computes one query row of the rep query heads that share a
// KV head, reading K and V (rows lo..hi, row stride ldkv) in place: out
// (rep rows, stride ldo), lse (rep entries, stride lse_stride; may be NULL),
// q (rep rows, stride ldq). s is scratch of rep*(hi-lo+1) floats.
void mk_attn_decode(float* out, long ldo, float* lse, long lse_stride, const float* q, long ldq,
                    int rep, const float* K, const float* V, long ldkv, long lo, long hi, long Dh,
                    float scale, float* s);

// Elementwise kernels (AVX-512; the mk2_ twins in native_avx2.c are the same
// at 256 bits). They mirror the Go loops of kernel/adamw.go, kernel/swiglu.go
// and kernel/attention_backward.go; see there for the math.

// mk_adamw runs one AdamW step over n elements in place (p, m, v; g read)
// with the scalars AdamW derives from the hyperparameters: every product and
// quotient rounded to float32 in the Go loop's order, true sqrt and division,
// so the result is bit-identical to it.
void mk_adamw(float* p, const float* g, float* m, float* v, long n, float decay, float w1, int lerp_low,
              float beta2, float c2, float neg_step, float bc2_sqrt, float eps);
// mk_swiglu sets out = silu(gate)*up over rows x cols: gate and up rows are
// ld apart, out rows ldo apart. out may alias gate or up element for element.
void mk_swiglu(float* out, long ldo, const float* gate, const float* up, long ld, long rows, long cols);
// mk_swiglu_bwd is SwiGLUBackward over rows x cols: dgate, dup, gate, up rows
// ld apart, dout rows ldo apart; outputs may alias inputs element for element.
void mk_swiglu_bwd(float* dgate, float* dup, const float* dout, long ldo, const float* gate,
                   const float* up, long ld, long rows, long cols);
// mk_exp_rows sets p[i*n + j] = exp(p[i*n + j] - lse[i]) for the columns row i
// (of rows) sees, j <= diag + i and, when window > 0, j > diag + i - window,
// and 0 for the others.
void mk_exp_rows(float* p, long rows, long n, const float* lse, long diag, long window);

// mk_peak_fma runs n iterations of 24 independent 512-bit FMA chains (peak probe).
float mk_peak_fma(long n);
// mk_peak_bf16 runs n iterations of 24 independent VDPBF16PS chains.
float mk_peak_bf16(long n);
// mk_read_bw sums n floats with 512-bit loads in 1 or 8 streams (bandwidth probe).
float mk_read_bw(const float* p, long n, int streams);

// AVX2+FMA kernels (native_avx2.c) for CPUs without AVX-512: no AVX-512
// instruction is used. They take bkind MK_B_F32 or MK_B_BF16 only (no bf16 dot
// product on AVX2: callers widen) and otherwise keep the contracts above,
// including the packed-B layout, so a buffer packed by either tier serves both.

// mk2_gemm is mk_gemm for bkind MK_B_F32 and MK_B_BF16.
void mk2_gemm(int transA, int transB, long M, long N, long K, float alpha,
              const float* A, long lda, const void* B, int bkind, int packed, long ldb,
              float beta, float* C, long ldc);
// mk2_pack_b is mk_pack_b for bkind MK_B_F32 and MK_B_BF16.
void mk2_pack_b(void* dst, int bkind, int transB, const void* B, long ldb, long K, long N);
// mk2_gemv is mk_gemv.
void mk2_gemv(float* y, const void* W, int bf16, long ldw, const float* x, long N, long K,
              float alpha, float beta);
// mk2_peak_fma runs n iterations of 12 independent 256-bit FMA chains (peak probe).
float mk2_peak_fma(long n);
// mk2_read_bw is mk_read_bw with 256-bit loads.
float mk2_read_bw(const float* p, long n, int streams);
// mk2_adamw, mk2_swiglu, mk2_swiglu_bwd and mk2_exp_rows are mk_adamw,
// mk_swiglu, mk_swiglu_bwd and mk_exp_rows.
void mk2_adamw(float* p, const float* g, float* m, float* v, long n, float decay, float w1, int lerp_low,
               float beta2, float c2, float neg_step, float bc2_sqrt, float eps);
void mk2_swiglu(float* out, long ldo, const float* gate, const float* up, long ld, long rows, long cols);
void mk2_swiglu_bwd(float* dgate, float* dup, const float* dout, long ldo, const float* gate,
                    const float* up, long ld, long rows, long cols);
void mk2_exp_rows(float* p, long rows, long n, const float* lse, long diag, long window);
// mk_gemv_packed computes y = alpha * x * B + beta * y over a pre-packed B
// (f32 or bf16-dot panels from mk_pack_b), N columns, K rows; AVX-512 only.
void mk_gemv_packed(float* y, const void* Bp, int bkind, long N, long K, const float* x,
                    float alpha, float beta);
// mk_gemv_packed_rows is mk_gemv_packed for M rows over panels [p0, p1): row r
// of x at x + r*ldx, of y at y + r*ldy (y at column 0); each row's result is
// bit-identical to mk_gemv_packed on that row alone. AVX-512 only.
void mk_gemv_packed_rows(float* y, long ldy, const void* Bp, int bkind, long N, long K,
                         const float* x, long ldx, long M, long p0, long p1, float alpha,
                         float beta);
#endif
