// The emulated CUDA device of ssd_fast's tests: the CUDA built-ins, intrinsics, shared memory
// and launches that csrc/ops/cuda/*.cu use, executed on the CPU so that CI runs those kernels
// without a GPU, with the checks compute-sanitizer would make (runtime.cpp).
//
// A purpose-built harness of this project, not a general CUDA runtime: it provides exactly what
// these kernels use (grids up to 3-D, warps of 32, __syncthreads[_and], __shfl_down_sync,
// __ballot_sync, __popc[ll], __ffsll, atomicAdd, atomicOr, static and dynamic shared memory)
// and nothing else. Kernels never include it: they reach it through csrc/ops/cuda/device.cuh,
// which maps the same names onto CUDA under nvcc. It is compiled only into the test-only module
// ssd_fast._C_emu (csrc/emu/build.py, SSD_FAST_EMU), never into ssd_fast._C.
//
// Execution model. A launch runs its blocks one after another on the calling thread; the
// threads of a block are cooperative fibers that run between barriers (__syncthreads, and the
// warp operations for the lanes they name) in a schedule order. Every launch runs under two
// schedules, threads and blocks in ascending then in reversed order, and the two must write the
// same bytes (runtime.cpp). Because fibers switch only at barriers and blocks run one after
// another, a race whose outcome does not depend on the order (two plain read-modify-writes of
// one word with a commutative operation) writes the same bytes under both schedules: the
// tracked build therefore also records who wrote each global byte, and flags two writers that
// nothing orders (see runtime.cpp, global races), and checks every global access against the
// live device allocations (global bounds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct uint3 {
  unsigned x, y, z;
};

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(__SANITIZE_THREAD__)
#define __SANITIZE_THREAD__ 1  // clang's spelling of GCC's
#endif
#endif
#if defined(__SANITIZE_THREAD__)
// The emulator's atomics must not be instrumented: they record themselves (runtime.cpp).
#define SSD_EMU_UNTRACKED __attribute__((no_sanitize("thread"), noinline))
#else
#define SSD_EMU_UNTRACKED __attribute__((noinline))
#endif

namespace ssd_emu {

// Where a kernel called a barrier or a warp operation (which must match, and for the messages).
struct Site {
  const char* file;
  int line;
};
inline Site site_of(const std::source_location& at) {
  return {at.file_name(), static_cast<int>(at.line())};
}
using Here = std::source_location;  // a default argument: the caller's file and line

// What the running CUDA thread sees; the scheduler points it at the thread it resumes.
struct ThreadView {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern __thread const ThreadView* tls_view __attribute__((tls_model("initial-exec")));

// A kernel as the launch names it: its address and its name, template arguments included.
struct KernelRef {
  const void* id;
  const char* name;
};

// Runs `run(closure)` once per CUDA thread of the grid (runtime.cpp). Throws std::runtime_error
// for a launch the hardware would refuse and for every failed check, naming the kernel.
// `closure_bytes`: the size of *closure (the kernel's parameters, which its threads read).
void launch(const KernelRef& kernel, dim3 grid, dim3 block, size_t dynamic_smem,
            void (*run)(void*), void* closure, size_t closure_bytes);

// The __launch_bounds__ of a kernel, by its name without namespace and template arguments:
// registered by the code csrc/emu/build.py generates from the .cu sources.
void register_launch_bounds(const char* kernel, int bound);
std::string kernel_base_name(const std::string& name);

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
void set_max_dynamic_smem(const KernelRef& kernel, int bytes);
constexpr int kMaxDynamicSmemOptin = 227 * 1024;  // H100/H200: the opt-in limit per block
constexpr int kDefaultSmemLimit = 48 * 1024;      // without the attribute (and static shared)

// The name of kernel K: "mining_kernel<float, float>", read off __PRETTY_FUNCTION__.
std::string kernel_name_from(const char* pretty_function);
template <auto K>
const char* kernel_name() {
  static const std::string name = kernel_name_from(__PRETTY_FUNCTION__);
  return name.c_str();
}

template <auto K, typename... P, typename... A>
void launch_with(void (*)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  // The arguments are converted to the parameter types once, as a CUDA launch copies them.
  using Params = std::tuple<std::decay_t<P>...>;
  Params params(std::forward<A>(args)...);
  auto run = [](void* p) { std::apply(K, *static_cast<Params*>(p)); };
  launch({reinterpret_cast<const void*>(K), kernel_name<K>()}, grid, block, smem, +run,
         &params, sizeof(params));
}

// Barriers and warp operations (the calling fiber waits for the threads they name).
void syncthreads(Site site);
int syncthreads_and(int predicate, Site site);
uint64_t shfl_down_bits(unsigned mask, uint64_t bits, unsigned delta, Site site);
unsigned ballot(unsigned mask, int predicate, Site site);

// Static shared memory: one object per (declaration, block), the same for every thread of the
// block, filled with the launch's poison pattern. `key` identifies the declaration.
void* block_shared(const void* key, size_t bytes, size_t align, const char* name);
// The dynamic shared memory of the block (exactly the launch's dynamic_smem bytes).
unsigned char* dynamic_shared();

// A failed device-side assertion (CUDA_KERNEL_ASSERT). On a GPU it is a sticky error: the CUDA
// context is lost and every later CUDA call of the process fails. Emulated, it fails the launch.
[[noreturn]] void device_assert_failed(const char* condition, Site site);

// An atomic read-modify-write of `bytes` bytes at p, about to happen (race and undo bookkeeping).
void note_atomic(void* p, size_t bytes);

// The checks, each of which the tests switch off once to show that it is what catches its fault
// (tests/emu/test_emulator.py). All are on unless a test says otherwise.
enum Check : unsigned {
  kCheckLaunch = 1,      // launch configuration and shared-memory limits
  kCheckBarrier = 2,     // every live thread at the same barrier
  kCheckWarp = 4,        // warp operations: masks and lanes
  kCheckRace = 8,        // shared-memory hazards since the last barrier (tracked build)
  kCheckSchedules = 16,  // two schedules, same bytes written (tracked build)
  kCheckPoison = 32,     // shared memory poisoned (else zero-filled)
  kCheckBounds = 64,     // shared-memory redzones (tracked build)
  kCheckGlobalRace = 128,     // two unordered writers of a global byte, not both atomic (tracked)
  kCheckGlobalBounds = 256,   // every global access inside a live device allocation (tracked)
  kAllChecks = 511,
};
void set_checks(unsigned mask);
unsigned checks();

// Counters of what the emulated device did since the module was loaded.
struct Stats {
  uint64_t launches, threads, fiber_switches, schedule_runs;
};
Stats stats();

// Every kernel registered (its __launch_bounds__ known) and how many times it was launched.
std::vector<std::pair<std::string, uint64_t>> kernel_launches();

// For error messages: what a device address belongs to (set by the device glue).
void set_address_describer(std::string (*describe)(uintptr_t));

// The live device allocation that holds address p: true and [*lo, *hi), or false (set by the
// device glue; the global-bounds check asks it).
void set_allocation_finder(bool (*find)(uintptr_t p, uintptr_t* lo, uintptr_t* hi));

}  // namespace ssd_emu

// ---- the CUDA names, as the kernels spell them -----------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

#undef CUDA_KERNEL_ASSERT
#define CUDA_KERNEL_ASSERT(cond)                    \
  ((cond) ? (void)0                                 \
          : ::ssd_emu::device_assert_failed(#cond, ::ssd_emu::site_of(::ssd_emu::Here::current())))

#define threadIdx (::ssd_emu::tls_view->thread_idx)
#define blockIdx (::ssd_emu::tls_view->block_idx)
#define blockDim (::ssd_emu::tls_view->block_dim)
#define gridDim (::ssd_emu::tls_view->grid_dim)

inline void __syncthreads(::ssd_emu::Here at = ::ssd_emu::Here::current()) {
  ::ssd_emu::syncthreads(::ssd_emu::site_of(at));
}

inline int __syncthreads_and(int predicate, ::ssd_emu::Here at = ::ssd_emu::Here::current()) {
  return ::ssd_emu::syncthreads_and(predicate, ::ssd_emu::site_of(at));
}

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta,
                   ::ssd_emu::Here at = ::ssd_emu::Here::current()) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "__shfl_down_sync: 8 bytes at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = ::ssd_emu::shfl_down_bits(mask, bits, delta, ::ssd_emu::site_of(at));
  std::memcpy(&var, &bits, sizeof(T));
  return var;
}

inline unsigned __ballot_sync(unsigned mask, int predicate,
                              ::ssd_emu::Here at = ::ssd_emu::Here::current()) {
  return ::ssd_emu::ballot(mask, predicate, ::ssd_emu::site_of(at));
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }

// Atomics: a fiber is never interrupted inside them, so a plain read-modify-write is atomic.
namespace ssd_emu {
template <typename T, typename Op>
SSD_EMU_UNTRACKED T atomic_update(T* address, T value, Op op) {
  static_assert(std::is_integral_v<T>, "the kernels' atomics take integers");
  note_atomic(address, sizeof(T));
  const T old = *address;
  *address = op(old, value);
  return old;
}
}  // namespace ssd_emu

template <typename T>
T atomicAdd(T* address, T value) {
  return ::ssd_emu::atomic_update(address, value, [](T a, T b) { return static_cast<T>(a + b); });
}

template <typename T>
T atomicOr(T* address, T value) {
  return ::ssd_emu::atomic_update(address, value, [](T a, T b) { return static_cast<T>(a | b); });
}

// SSD_SHARED(T, name): a static __shared__ T (T may be an array type).
#define SSD_EMU_SHARED(T, name)                                                             \
  static char name##_emu_key;                                                               \
  std::type_identity_t<T>& name = *static_cast<std::type_identity_t<T>*>(                   \
      ::ssd_emu::block_shared(&name##_emu_key, sizeof(T), alignof(T), #name))
