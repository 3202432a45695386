//go:build linux

package cuda

// Checks that run on any Device: the real GPU (gpu_test.go) and the fake
// driver (fake_test.go) share them.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testDevice is device 0, opened once per test process and never closed.
var testDevice struct {
	once sync.Once
	d    *Device
	err  error
}

// device returns device 0, skipping the test when there is no usable GPU.
func device(t testing.TB) *Device {
	t.Helper()
	testDevice.once.Do(func() { testDevice.d, testDevice.err = Open(0) })
	if errors.Is(testDevice.err, ErrUnavailable) {
		t.Skipf("no GPU: %v", testDevice.err)
	}
	if testDevice.err != nil {
		t.Fatalf("Open(0): %v", testDevice.err)
	}
	return testDevice.d
}

func stream(t testing.TB, d *Device) *Stream {
	t.Helper()
	s, err := d.NewStream()
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Stream.Close: %v", err)
		}
	})
	return s
}

func malloc(t testing.TB, d *Device, bytes int64) DevPtr {
	t.Helper()
	p, err := d.Malloc(bytes)
	if err != nil {
		t.Fatalf("Malloc(%d): %v", bytes, err)
	}
	t.Cleanup(func() {
		if err := d.Free(p); err != nil {
			t.Errorf("Free: %v", err)
		}
	})
	return p
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// firstDiff describes where got and want first differ.
func firstDiff(got, want []byte) string {
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d of %d: got %#x, want %#x", i, len(want), got[i], want[i])
		}
	}
	return "lengths differ"
}

// checkMemory: Malloc, HtoD, DtoD at an offset, Memset, DtoH.
func checkMemory(t *testing.T, d *Device) {
	s := stream(t, d)
	r := rand.New(rand.NewPCG(1, 2))
	const n = 1<<20 + 13
	src := randomBytes(r, n)
	a, b := malloc(t, d, n), malloc(t, d, n+64)

	free0, total, err := d.MemInfo()
	if err != nil || free0 <= 0 || free0 > total {
		t.Errorf("MemInfo = %d, %d, %v; want 0 < free <= total", free0, total, err)
	}
	t.Logf("MemInfo: free %d of %d bytes; Info.TotalMem %d", free0, total, d.Info().TotalMem)

	must(t, s.CopyHtoD(a, src))
	must(t, s.Memset(b, n+64, 0xab))
	must(t, s.CopyDtoD(b.Add(64), a, n))
	must(t, s.Memset(b.Add(64+100), 50, 0x11))
	got := make([]byte, n+64)
	must(t, s.CopyDtoH(got, b))
	must(t, s.Sync())

	want := append(bytes.Repeat([]byte{0xab}, 64), src...)
	copy(want[64+100:64+150], bytes.Repeat([]byte{0x11}, 50))
	if !bytes.Equal(got, want) {
		t.Errorf("round trip: %s", firstDiff(got, want))
	}

	// Empty copies are no-ops; bad sizes are errors.
	must(t, s.CopyHtoD(a, nil))
	must(t, s.CopyDtoH(nil, a))
	if err := s.CopyDtoD(a, b, -1); err == nil {
		t.Error("CopyDtoD of -1 bytes: no error")
	}
	if _, err := d.Malloc(0); err == nil {
		t.Error("Malloc(0): no error")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkPinned: HostAlloc'd and HostRegister'd (mmap) memory as copy
// sources and destinations.
func checkPinned(t *testing.T, d *Device) {
	s := stream(t, d)
	const n = 4 << 20
	h, err := d.HostAlloc(n)
	if err != nil {
		t.Fatalf("HostAlloc: %v", err)
	}
	defer func() { must(t, d.HostFree(h)) }()
	if len(h) != n || cap(h) != n {
		t.Fatalf("HostAlloc(%d): len %d cap %d", n, len(h), cap(h))
	}
	r := rand.New(rand.NewPCG(3, 4))
	copy(h, randomBytes(r, n))

	m, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer syscall.Munmap(m)
	must(t, d.HostRegister(m))

	p := malloc(t, d, n)
	must(t, s.CopyHtoD(p, h))
	must(t, s.CopyDtoH(m, p))
	must(t, s.Sync())
	if !bytes.Equal(m, h) {
		t.Errorf("pinned → device → registered: %s", firstDiff(m, h))
	}
	// And back the other way, from the registered region.
	m[0], m[n-1] = ^m[0], ^m[n-1]
	must(t, s.CopyHtoD(p, m))
	must(t, s.CopyDtoH(h, p))
	must(t, s.Sync())
	if !bytes.Equal(m, h) {
		t.Errorf("registered → device → pinned: %s", firstDiff(h, m))
	}
	must(t, d.HostUnregister(m))
	if err := d.HostUnregister(m); err == nil {
		t.Error("second HostUnregister: no error")
	}
}

// checkEvents: Record, Done, Sync, Elapsed, and a stream waiting on an
// event recorded on another.
func checkEvents(t *testing.T, d *Device) {
	s1, s2 := stream(t, d), stream(t, d)
	start, err := d.NewEvent(true)
	must(t, err)
	defer start.Close()
	end, err := d.NewEvent(true)
	must(t, err)
	defer end.Close()
	plain, err := d.NewEvent(false)
	must(t, err)
	defer plain.Close()

	const n = 64 << 20
	buf := malloc(t, d, n)
	must(t, start.Record(s1))
	for v := range 4 {
		must(t, s1.Memset(buf, n, byte(v+1)))
	}
	must(t, end.Record(s1))
	must(t, plain.Record(s1))

	// s2 reads buf after s1's memsets, through the event alone.
	must(t, s2.Wait(plain))
	got := make([]byte, 4096)
	must(t, s2.CopyDtoH(got, buf.Add(n-4096)))
	must(t, s2.Sync())
	if want := bytes.Repeat([]byte{4}, 4096); !bytes.Equal(got, want) {
		t.Errorf("stream waiting on an event read %s", firstDiff(got, want))
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		done, err := end.Done()
		must(t, err)
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("end event not done after 10s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	must(t, end.Sync())
	el, err := Elapsed(start, end)
	must(t, err)
	if el <= 0 || el > 10*time.Second {
		t.Errorf("Elapsed = %v for 4 memsets of %d MiB", el, n>>20)
	}
	t.Logf("4 memsets of %d MiB: %v (%.0f GB/s)", n>>20, el, 4*n/el.Seconds()/1e9)
	if _, err := Elapsed(start, plain); err == nil {
		t.Error("Elapsed with a non-timing event: no error")
	}
}

// checkConcurrent: goroutines (on whatever OS threads) allocate, copy and
// run GEMMs at once; each call must make the context current itself.
func checkConcurrent(t *testing.T, d *Device) {
	b, err := d.Blas()
	must(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- concurrentWork(d, b, g)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func concurrentWork(d *Device, b *Blas, g int) error {
	s, err := d.NewStream()
	if err != nil {
		return err
	}
	defer s.Close()
	const m = 16
	a := make([]float32, m*m)
	for i := range a {
		a[i] = float32(g + i%7)
	}
	p, err := d.Malloc(3 * m * m * 4)
	if err != nil {
		return err
	}
	defer d.Free(p)
	for iter := range 20 {
		if err := s.CopyHtoD(p, f32Bytes(a)); err != nil {
			return err
		}
		// C = I·A with I built by a memset and copies of ones on the diagonal.
		ident := make([]float32, m*m)
		for i := range m {
			ident[i*m+i] = 1
		}
		if err := s.CopyHtoD(p.Add(m*m*4), f32Bytes(ident)); err != nil {
			return err
		}
		if err := b.Gemm(s, false, false, m, m, m, 1, p.Add(m*m*4), F32, m, p, F32, m, 0, p.Add(2*m*m*4), F32, m); err != nil {
			return err
		}
		got := make([]byte, m*m*4)
		if err := s.CopyDtoH(got, p.Add(2*m*m*4)); err != nil {
			return err
		}
		if err := s.Sync(); err != nil {
			return err
		}
		if !bytes.Equal(got, f32Bytes(a)) {
			return fmt.Errorf("goroutine %d iteration %d: I·A != A: %s", g, iter, firstDiff(got, f32Bytes(a)))
		}
	}
	return nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// bf16 rounds x to bfloat16 (nearest even), returning its bits.
func bf16(x float32) uint16 {
	u := math.Float32bits(x)
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func bf16Float(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// matrix is a column-major matrix with leading dimension ld, held as the
// float64 values of its elements (exactly representable in its type).
type matrix struct {
	rows, cols, ld int
	t              DataType
	v              []float64 // ld*cols
}

func randomMatrix(r *rand.Rand, rows, cols, pad int, t DataType) matrix {
	m := matrix{rows: rows, cols: cols, ld: max(1, rows+pad), t: t}
	m.v = make([]float64, m.ld*cols)
	for i := range m.v {
		x := float32(r.Float64()*2 - 1)
		if t == BF16 {
			x = bf16Float(bf16(x))
		}
		m.v[i] = float64(x)
	}
	return m
}

func (m matrix) bytes() []byte {
	b := make([]byte, len(m.v)*m.t.Size())
	for i, x := range m.v {
		if m.t == BF16 {
			binary.LittleEndian.PutUint16(b[2*i:], bf16(float32(x)))
		} else {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
		}
	}
	return b
}

func decode(b []byte, t DataType) []float64 {
	v := make([]float64, len(b)/t.Size())
	for i := range v {
		if t == BF16 {
			v[i] = float64(bf16Float(binary.LittleEndian.Uint16(b[2*i:])))
		} else {
			v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
	}
	return v
}

// gemmCase is one column-major GEMM: C(m×n) = alpha·op(A)·op(B) + beta·C.
type gemmCase struct {
	name         string
	ta, tb       bool
	m, n, k, pad int
	in, out      DataType
	alpha, beta  float32
	batch        int  // 0: Gemm; else GemmStridedBatched
	nilStream    bool // the legacy default stream
}

var gemmCases = []gemmCase{
	{name: "f32 NN", m: 67, n: 45, k: 129, pad: 3, in: F32, out: F32, alpha: 1.5, beta: 0.5},
	{name: "f32 TN", ta: true, m: 33, n: 70, k: 64, in: F32, out: F32, alpha: 1, beta: 0},
	{name: "f32 NT", tb: true, m: 64, n: 17, k: 31, pad: 1, in: F32, out: F32, alpha: -0.5, beta: 1},
	{name: "f32 TT", ta: true, tb: true, m: 5, n: 9, k: 300, pad: 2, in: F32, out: F32, alpha: 2, beta: -1},
	{name: "f32 1x1x1", m: 1, n: 1, k: 1, in: F32, out: F32, alpha: 1, beta: 0},
	{name: "f32 n=0", m: 8, n: 0, k: 8, in: F32, out: F32, alpha: 1, beta: 0},
	{name: "bf16 to f32 NN", m: 128, n: 96, k: 256, in: BF16, out: F32, alpha: 1, beta: 0},
	{name: "bf16 to f32 TN (row-major x·Wᵀ)", ta: true, m: 96, n: 40, k: 512, pad: 8, in: BF16, out: F32, alpha: 1, beta: 1},
	{name: "bf16 to bf16 NT", tb: true, m: 72, n: 56, k: 100, in: BF16, out: BF16, alpha: 0.75, beta: 0.25},
	{name: "bf16 to bf16 TT", ta: true, tb: true, m: 31, n: 33, k: 65, pad: 1, in: BF16, out: BF16, alpha: 1, beta: 0},
	{name: "f32 default stream", m: 20, n: 30, k: 40, in: F32, out: F32, alpha: 1, beta: 0.5, nilStream: true},
	{name: "batched f32 NN", m: 24, n: 16, k: 40, pad: 2, in: F32, out: F32, alpha: 1, beta: 0.5, batch: 3},
	{name: "batched bf16 to f32 TN", ta: true, m: 64, n: 8, k: 128, in: BF16, out: F32, alpha: 1, beta: 0, batch: 5},
	{name: "batched bf16 to bf16 NT", tb: true, m: 16, n: 48, k: 32, pad: 4, in: BF16, out: BF16, alpha: 2, beta: 1, batch: 2},
}

// checkGemmCase runs one case on the device and compares with a float64
// reference on the same (rounded) inputs.
func checkGemmCase(t *testing.T, d *Device, c gemmCase) {
	b, err := d.Blas()
	must(t, err)
	var s *Stream
	if !c.nilStream {
		s = stream(t, d)
	}
	r := rand.New(rand.NewPCG(uint64(c.m), uint64(c.n*1000+c.k)))
	batch := max(c.batch, 1)
	rowsA, colsA := c.m, c.k
	if c.ta {
		rowsA, colsA = c.k, c.m
	}
	rowsB, colsB := c.k, c.n
	if c.tb {
		rowsB, colsB = c.n, c.k
	}
	var as, bs, cs []matrix
	for range batch {
		as = append(as, randomMatrix(r, rowsA, colsA, c.pad, c.in))
		bs = append(bs, randomMatrix(r, rowsB, colsB, c.pad, c.in))
		cs = append(cs, randomMatrix(r, c.m, c.n, c.pad, c.out))
	}
	// Batches are laid out with a gap of 16 elements between them.
	strideA, strideB, strideC := len(as[0].v)+16, len(bs[0].v)+16, len(cs[0].v)+16
	upload := func(ms []matrix, stride int) DevPtr {
		es := ms[0].t.Size()
		buf := make([]byte, max(1, stride*len(ms)*es))
		for i, m := range ms {
			copy(buf[i*stride*es:], m.bytes())
		}
		p := malloc(t, d, int64(len(buf)))
		must(t, hostToDevice(s, d, p, buf))
		return p
	}
	pa, pb, pc := upload(as, strideA), upload(bs, strideB), upload(cs, strideC)

	if c.batch == 0 {
		err = b.Gemm(s, c.ta, c.tb, c.m, c.n, c.k, c.alpha, pa, c.in, as[0].ld, pb, c.in, bs[0].ld, c.beta, pc, c.out, cs[0].ld)
	} else {
		err = b.GemmStridedBatched(s, c.ta, c.tb, c.m, c.n, c.k, c.alpha, pa, c.in, as[0].ld, int64(strideA), pb, c.in, bs[0].ld, int64(strideB),
			c.beta, pc, c.out, cs[0].ld, int64(strideC), c.batch)
	}
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	out := make([]byte, max(1, strideC*batch*c.out.Size()))
	must(t, deviceToHost(s, d, out, pc))
	got := decode(out, c.out)

	bad := 0
	for bi := range batch {
		A, B, C := as[bi], bs[bi], cs[bi]
		for j := range c.n {
			for i := range c.m {
				var sum, scale float64
				for p := range c.k {
					var x, y float64
					if c.ta {
						x = A.v[p+i*A.ld]
					} else {
						x = A.v[i+p*A.ld]
					}
					if c.tb {
						y = B.v[j+p*B.ld]
					} else {
						y = B.v[p+j*B.ld]
					}
					sum += x * y
					scale += math.Abs(x * y)
				}
				c0 := C.v[i+j*C.ld]
				want := float64(c.alpha)*sum + float64(c.beta)*c0
				scale = math.Abs(float64(c.alpha))*scale + math.Abs(float64(c.beta)*c0)
				tol := 1e-4*scale + 1e-6
				if c.out == BF16 {
					tol += math.Abs(want) / 128
				}
				g := got[bi*strideC+i+j*C.ld]
				if math.Abs(g-want) > tol || math.IsNaN(g) {
					if bad < 5 {
						t.Errorf("%s: batch %d C[%d,%d] = %.6g, want %.6g (tolerance %.2g)", c.name, bi, i, j, g, want, tol)
					}
					bad++
				}
			}
			// Padding rows of C are untouched.
			for i := c.m; i < C.ld; i++ {
				if g, w := got[bi*strideC+i+j*C.ld], C.v[i+j*C.ld]; g != w {
					if bad < 5 {
						t.Errorf("%s: batch %d padding C[%d,%d] changed: %g, was %g", c.name, bi, i, j, g, w)
					}
					bad++
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s (m=%d n=%d k=%d transA=%v transB=%v %v→%v lda=%d ldb=%d ldc=%d batch=%d): %d wrong elements",
			c.name, c.m, c.n, c.k, c.ta, c.tb, c.in, c.out, as[0].ld, bs[0].ld, cs[0].ld, c.batch, bad)
	}
}

// hostToDevice copies on s, or synchronously through a temporary stream
// when s is nil (the default-stream case).
func hostToDevice(s *Stream, d *Device, p DevPtr, b []byte) error {
	if s != nil {
		return s.CopyHtoD(p, b)
	}
	tmp, err := d.NewStream()
	if err != nil {
		return err
	}
	defer tmp.Close()
	if err := tmp.CopyHtoD(p, b); err != nil {
		return err
	}
	return tmp.Sync()
}

func deviceToHost(s *Stream, d *Device, b []byte, p DevPtr) error {
	if s == nil {
		if err := d.Sync(); err != nil {
			return err
		}
		return syncCopyDtoH(d, b, p)
	}
	if err := s.CopyDtoH(b, p); err != nil {
		return err
	}
	return s.Sync()
}

// syncCopyDtoH copies synchronously through a temporary stream.
func syncCopyDtoH(d *Device, b []byte, p DevPtr) error {
	tmp, err := d.NewStream()
	if err != nil {
		return err
	}
	defer tmp.Close()
	if err := tmp.CopyDtoH(b, p); err != nil {
		return err
	}
	return tmp.Sync()
}

// checkGemmErrors: bad shapes are refused before cuBLAS with the shapes
// in the message.
func checkGemmErrors(t *testing.T, d *Device) {
	b, err := d.Blas()
	must(t, err)
	err = b.Gemm(nil, false, false, 8, 8, 8, 1, 0, F32, 4, 0, F32, 8, 0, 0, F32, 8)
	if err == nil || !strings.Contains(err.Error(), "lda=4 < 8 rows of A") {
		t.Errorf("Gemm with lda too small: %v", err)
	}
}
