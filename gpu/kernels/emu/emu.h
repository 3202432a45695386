// emu.h: runs CUDA C kernels on the CPU, for tests on machines without a
// GPU. Prepended to the kernel sources (the text NVRTC compiles) and built
// as C++ into a shared library that package emu loads.
//
// A launch runs the grid one block at a time. The block's threads are
// fibers (ucontext) on the calling OS thread, switched only at barriers:
// __syncthreads waits for every thread of the block that has not returned,
// __syncwarp and the shuffles for the live lanes of the warp. One block at
// a time makes __shared__ (defined as static) exactly per-block storage.
// A deadlock (a barrier no thread can pass) fails the launch.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <math.h>
#include <sys/mman.h>
#include <tuple>
#include <type_traits>
#include <ucontext.h>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };

// The running thread's coordinates, set by the scheduler before each switch.
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

namespace emu {

constexpr int kMaxThreads = 1024;
constexpr size_t kStack = 256 << 10; // bytes per fiber

struct Fiber {
	ucontext_t ctx;
	char* stack = nullptr;
	bool done = false;
	uint3 tid;
};

static ucontext_t sched;
static std::vector<Fiber> fibers;
static int cur;
static std::function<void()> body;
static long progress;       // counts barrier arrivals, releases and returns
static unsigned char* dyn;  // dynamic shared memory of the block
static size_t dynCap;

struct Barrier {
	int live = 0, arrived = 0;
	long gen = 0;
};
static Barrier block;
static Barrier warps[kMaxThreads / 32];
static uint64_t slots[kMaxThreads / 32][32];

inline void yield() { swapcontext(&fibers[cur].ctx, &sched); }

inline int linear() { return cur; }

inline void wait(Barrier& b) {
	long g = b.gen;
	progress++;
	if (++b.arrived == b.live) {
		b.arrived = 0;
		b.gen++;
		return;
	}
	while (b.gen == g) {
		yield();
	}
}

inline void leave(Barrier& b) {
	b.live--;
	if (b.arrived > 0 && b.arrived == b.live) {
		b.arrived = 0;
		b.gen++;
	}
}

inline void entry() {
	body();
	Fiber& f = fibers[cur];
	f.done = true;
	progress++;
	leave(block);
	leave(warps[cur / 32]);
	// returning resumes sched through uc_link
}

template <class T> inline T shfl(T v, int src) {
	static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
	int w = cur / 32, lane = cur % 32;
	uint64_t bits = 0;
	std::memcpy(&bits, &v, sizeof(T));
	slots[w][lane] = bits;
	wait(warps[w]);
	uint64_t got = slots[w][src & 31];
	wait(warps[w]); // every lane has read before the slots are rewritten
	T r;
	std::memcpy(&r, &got, sizeof(T));
	return r;
}

inline void* dynamicShared() { return dyn; }

// run executes kernel k over the grid; it returns an error message or null.
inline const char* run(dim3 grid, dim3 blk, size_t sharedBytes, const std::function<void()>& k) {
	int n = (int)(blk.x * blk.y * blk.z);
	if (n < 1 || n > kMaxThreads) {
		return "block size outside [1, 1024]";
	}
	if (sharedBytes > dynCap) {
		std::free(dyn);
		dyn = (unsigned char*)std::aligned_alloc(256, (sharedBytes + 255) / 256 * 256);
		dynCap = sharedBytes;
	}
	if ((int)fibers.size() < n) {
		fibers.resize(n);
	}
	for (int i = 0; i < n; i++) {
		if (!fibers[i].stack) {
			void* s = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (s == MAP_FAILED) {
				return "mmap of a fiber stack failed";
			}
			fibers[i].stack = (char*)s;
		}
		fibers[i].tid = uint3{(unsigned)(i % blk.x), (unsigned)(i / blk.x % blk.y), (unsigned)(i / (blk.x * blk.y))};
	}
	blockDim = blk;
	gridDim = grid;
	body = k;
	for (unsigned bz = 0; bz < grid.z; bz++) {
		for (unsigned by = 0; by < grid.y; by++) {
			for (unsigned bx = 0; bx < grid.x; bx++) {
				blockIdx = uint3{bx, by, bz};
				if (dyn) {
					std::memset(dyn, 0xff, dynCap); // NaN-ish garbage, as uninitialised memory
				}
				block = Barrier{};
				block.live = n;
				for (int w = 0; w < (n + 31) / 32; w++) {
					warps[w] = Barrier{};
					warps[w].live = std::min(32, n - w * 32);
				}
				for (int i = 0; i < n; i++) {
					Fiber& f = fibers[i];
					f.done = false;
					getcontext(&f.ctx);
					f.ctx.uc_stack.ss_sp = f.stack;
					f.ctx.uc_stack.ss_size = kStack;
					f.ctx.uc_link = &sched;
					makecontext(&f.ctx, entry, 0);
				}
				int left = n;
				while (left > 0) {
					long before = progress;
					for (int i = 0; i < n; i++) {
						if (fibers[i].done) {
							continue;
						}
						cur = i;
						threadIdx = fibers[i].tid;
						swapcontext(&sched, &fibers[i].ctx);
						if (fibers[i].done) {
							left--;
						}
					}
					if (left > 0 && progress == before) {
						return "deadlock: threads wait at a barrier no thread can pass";
					}
				}
			}
		}
	}
	return nullptr;
}

// Kernel parameters arrive as cuLaunchKernel's: an array of pointers to
// the values. kind names each parameter for the launcher's type check.
template <class A> constexpr char kind() {
	if (std::is_pointer<A>::value) return 'p';
	if (std::is_floating_point<A>::value) return sizeof(A) == 4 ? 'f' : 'd';
	return sizeof(A) == 4 ? 'i' : sizeof(A) == 8 ? 'l' : '?';
}

template <class... A, size_t... I>
inline const char* launchWith(void (*f)(A...), void** p, std::index_sequence<I...>, dim3 grid, dim3 blk, size_t shared) {
	std::tuple<std::remove_cv_t<A>...> vals{*static_cast<std::remove_cv_t<A>*>(p[I])...};
	return run(grid, blk, shared, [f, &vals] { f(std::get<I>(vals)...); });
}

// launch checks the parameter kinds against the kernel's signature, copies
// the values (they need only live through the call) and runs the grid.
template <class... A>
inline const char* launch(void (*f)(A...), const char* kinds, void** p, dim3 grid, dim3 blk, size_t shared, char* err, size_t errLen) {
	constexpr char want[] = {kind<A>()..., 0};
	if (std::strcmp(kinds, want) != 0) {
		std::snprintf(err, errLen, "parameter kinds %s do not match the kernel's %s (p pointer, i 32-bit int, l 64-bit int, f float)", kinds, want);
		return err;
	}
	return launchWith(f, p, std::index_sequence_for<A...>{}, grid, blk, shared);
}

} // namespace emu

// The CUDA built-ins the kernels use.
inline void __syncthreads() { emu::wait(emu::block); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::warps[emu::cur / 32]); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int m) { return emu::shfl(v, (emu::cur % 32) ^ m); }
template <class T> inline T __shfl_sync(unsigned, T v, int src) { return emu::shfl(v, src); }
inline int __any_sync(unsigned, int p) {
	int any = 0;
	for (int o = 1; o < 32; o <<= 1) {
		p |= __shfl_xor_sync(0xffffffffu, p, o);
	}
	any = p != 0;
	return any;
}
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline float __uint_as_float(unsigned int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline unsigned int __float_as_uint(float v) { unsigned int i; std::memcpy(&i, &v, 4); return i; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
using std::max;
using std::min;

#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::dynamicShared())
