// Kernels that break the rules on purpose, one or more per check of the emulated CUDA device
// (csrc/emu/runtime.cpp). tests/emu/test_emulator.py runs each through the test-only op
// ssd_emu_test::broken and expects the check to fire and to name the kernel, then switches the
// check off and sees the fault go through. Compiled into ssd_fast._C_emu only (build.py), like
// csrc/ops/cuda/*.cu through csrc/ops/cuda/device.cuh; never built by nvcc.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "ops/cuda/device.cuh"

namespace ssd_fast {
namespace {

// race: each thread writes its slot, then reads its neighbour's without a barrier in between.
__global__ void __launch_bounds__(64) race_kernel(int* out) {
  SSD_SHARED(int[64], slot);
  const int t = threadIdx.x;
  slot[t] = t;
  out[t] = slot[(t + 1) % 64];
}

// atomic_race: reads a shared counter while the other threads may still be adding to it.
__global__ void __launch_bounds__(64) atomic_race_kernel(int* out) {
  SSD_SHARED(int, count);
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1);
  out[threadIdx.x] = count;
}

// atomic_after_plain: thread 0 sets a shared counter and adds to it; the others add to it in the
// same phase, without a barrier after the plain write.
__global__ void __launch_bounds__(64) atomic_after_plain_kernel(int* out) {
  SSD_SHARED(int, count);
  if (threadIdx.x == 0) count = 0;
  atomicAdd(&count, 1);
  __syncthreads();
  out[threadIdx.x] = count;
}

// last_block_wins: every block writes its index to the same word (a race between blocks that
// touches no shared memory: only the two schedules see it).
__global__ void __launch_bounds__(32) last_block_wins_kernel(int* out) {
  if (threadIdx.x == 0) out[0] = static_cast<int>(blockIdx.x);
}

// uninitialised: adds to a shared float that nobody set (as if shared memory started at zero).
__global__ void __launch_bounds__(32) uninitialised_kernel(float* out) {
  SSD_SHARED(float, sum);
  if (threadIdx.x == 0) sum += 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = sum;
}

// barrier_exit: half of the block returns before the barrier the other half waits at.
__global__ void __launch_bounds__(64) barrier_exit_kernel(int* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// barrier_sites: even threads wait at one __syncthreads, odd threads at another.
__global__ void __launch_bounds__(64) barrier_sites_kernel(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// partial_warp: a full-mask shuffle in a block of 48 threads (its second warp has 16 lanes).
__global__ void __launch_bounds__(64) partial_warp_kernel(int* out) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

// warp_exit: lanes 16-31 return; lanes 0-15 shuffle with a mask that names all 32.
__global__ void __launch_bounds__(32) warp_exit_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

// warp_sites: odd and even lanes reach different __shfl_down_sync calls.
__global__ void __launch_bounds__(32) warp_sites_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x % 2) {
    v = __shfl_down_sync(0xffffffffu, v, 1);
  } else {
    v = __shfl_down_sync(0xffffffffu, v, 2);
  }
  out[threadIdx.x] = v;
}

// shared_overrun: 64 threads write one byte each into 63 bytes of dynamic shared memory.
__global__ void __launch_bounds__(64) shared_overrun_kernel(int* out) {
  SSD_DYNAMIC_SHARED(smem);
  smem[threadIdx.x] = 1;
  out[threadIdx.x] = 1;
}

// shared_underrun: thread 0 writes the int just before its shared array.
__global__ void __launch_bounds__(32) shared_underrun_kernel(int* out) {
  SSD_SHARED(int[32], slot);
  int* p = slot;
  p[static_cast<int>(threadIdx.x) - 1] = 1;
  out[threadIdx.x] = 1;
}

// static_plus_dynamic: 16 KiB of static and 40 KiB of dynamic shared memory, each under 48 KiB,
// together above it (the kernel's limit was not raised).
__global__ void __launch_bounds__(32) static_plus_dynamic_kernel(int* out) {
  SSD_SHARED(unsigned char[16 * 1024], buf);
  SSD_DYNAMIC_SHARED(smem);
  buf[threadIdx.x] = smem[threadIdx.x] = 1;
  out[threadIdx.x] = buf[threadIdx.x] + smem[threadIdx.x];
}

// Launched with more threads than its bounds, or with a bad grid (the launch is refused).
__global__ void __launch_bounds__(64) bounded_kernel(int* out) { out[threadIdx.x] = 1; }

// big_dynamic: 64 KiB of dynamic shared memory, more than a block gets without the attribute.
__global__ void __launch_bounds__(32) big_dynamic_kernel(int* out) {
  SSD_DYNAMIC_SHARED(smem);
  smem[threadIdx.x * 2048] = 1;
  out[threadIdx.x] = smem[threadIdx.x * 2048];
}

// big_static: 49 KiB of static shared memory (48 KiB is the most a kernel may declare).
__global__ void __launch_bounds__(32) big_static_kernel(int* out) {
  SSD_SHARED(unsigned char[49 * 1024], buf);
  buf[threadIdx.x * 1568] = 1;
  out[threadIdx.x] = buf[threadIdx.x * 1568];
}

// global_or: the threads t with t % stride == 0 of every block OR their own bit into out[0]
// with a plain read-modify-write. Two such writers (lanes of a warp, two warps, two blocks) race:
// on a GPU one update may be lost; OR commutes, so both schedules write the same bytes.
__global__ void __launch_bounds__(64) global_or_kernel(int* out, int stride) {
  const int t = threadIdx.x;
  if (t % stride == 0) out[0] |= 1 << (t / stride + 2 * static_cast<int>(blockIdx.x));
}

// global_atomic_or: the same with atomicOr (no race).
__global__ void __launch_bounds__(64) global_atomic_or_kernel(int* out) {
  atomicOr(&out[0], 1 << ((threadIdx.x + blockIdx.x) % 31));
}

// global_barrier_ordered: thread 0 writes out[0], thread 1 adds to it after a barrier (no race).
__global__ void __launch_bounds__(64) global_barrier_ordered_kernel(int* out) {
  if (threadIdx.x == 0) out[0] = 1;
  __syncthreads();
  if (threadIdx.x == 1) out[0] += 1;
}

// global_atomic_after_plain: block 0 resets a global counter that block 1 adds to atomically.
__global__ void __launch_bounds__(64) global_atomic_after_plain_kernel(int* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = 0;
  if (blockIdx.x == 1) atomicAdd(&out[0], 1);
}

// global_overrun: one thread more than the output has elements writes its element.
__global__ void __launch_bounds__(128) global_overrun_kernel(int* out) { out[threadIdx.x] = 1; }

// global_underrun: thread t copies in[t - 1]; thread 0 reads the element before the input.
__global__ void __launch_bounds__(64) global_underrun_kernel(const int* in, int* out) {
  out[threadIdx.x] = in[static_cast<int>(threadIdx.x) - 1];
}

at::Tensor broken(const at::Tensor& like, c10::string_view name_view) {
  const std::string name(name_view);
  const dev::DeviceGuard guard(like.device());
  const dev::Stream stream = dev::current_stream();
  at::Tensor out = at::zeros({2048}, like.options().dtype(at::kInt));  // room for every thread
  int* o = out.data_ptr<int>();
  if (name == "race") dev::launch<race_kernel>(1, 64, 0, stream, o);
  else if (name == "atomic_race") dev::launch<atomic_race_kernel>(1, 64, 0, stream, o);
  else if (name == "atomic_after_plain") dev::launch<atomic_after_plain_kernel>(1, 64, 0, stream, o);
  else if (name == "shared_underrun") dev::launch<shared_underrun_kernel>(1, 32, 0, stream, o);
  else if (name == "static_plus_dynamic") {
    dev::launch<static_plus_dynamic_kernel>(1, 32, 40 * 1024, stream, o);
  }
  else if (name == "last_block_wins") dev::launch<last_block_wins_kernel>(8, 32, 0, stream, o);
  else if (name == "uninitialised") {
    out = at::zeros({1}, like.options().dtype(at::kFloat));
    dev::launch<uninitialised_kernel>(1, 32, 0, stream, out.data_ptr<float>());
  }
  else if (name == "barrier_exit") dev::launch<barrier_exit_kernel>(1, 64, 0, stream, o);
  else if (name == "barrier_sites") dev::launch<barrier_sites_kernel>(1, 64, 0, stream, o);
  else if (name == "partial_warp") dev::launch<partial_warp_kernel>(1, 48, 0, stream, o);
  else if (name == "warp_exit") dev::launch<warp_exit_kernel>(1, 32, 0, stream, o);
  else if (name == "warp_sites") dev::launch<warp_sites_kernel>(1, 32, 0, stream, o);
  else if (name == "shared_overrun") dev::launch<shared_overrun_kernel>(1, 64, 63, stream, o);
  else if (name == "above_bounds") dev::launch<bounded_kernel>(1, 128, 0, stream, o);
  else if (name == "block_1025") dev::launch<bounded_kernel>(1, 1025, 0, stream, o);
  else if (name == "block_z_65") dev::launch<bounded_kernel>(1, dim3(1, 1, 65), 0, stream, o);
  else if (name == "grid_y_65536") dev::launch<bounded_kernel>(dim3(1, 65536), 64, 0, stream, o);
  else if (name == "grid_zero") dev::launch<bounded_kernel>(0, 64, 0, stream, o);
  else if (name == "dynamic_without_attribute") {
    dev::launch<big_dynamic_kernel>(1, 32, 64 * 1024, stream, o);
  } else if (name == "dynamic_with_attribute") {
    dev::set_max_dynamic_smem<big_dynamic_kernel>(64 * 1024);
    dev::launch<big_dynamic_kernel>(1, 32, 64 * 1024, stream, o);
  } else if (name == "dynamic_above_optin") {
    dev::set_max_dynamic_smem<big_dynamic_kernel>(228 * 1024);
  } else if (name == "big_static") {
    dev::launch<big_static_kernel>(1, 32, 0, stream, o);
  } else if (name == "global_or_lanes") {
    dev::launch<global_or_kernel>(1, 2, 0, stream, o, 1);
  } else if (name == "global_or_warps") {
    dev::launch<global_or_kernel>(1, 64, 0, stream, o, 32);
  } else if (name == "global_or_blocks") {
    dev::launch<global_or_kernel>(2, 1, 0, stream, o, 1);
  } else if (name == "global_atomic_or") {
    dev::launch<global_atomic_or_kernel>(2, 64, 0, stream, o);
  } else if (name == "global_barrier_ordered") {
    dev::launch<global_barrier_ordered_kernel>(1, 64, 0, stream, o);
  } else if (name == "global_atomic_after_plain") {
    dev::launch<global_atomic_after_plain_kernel>(2, 64, 0, stream, o);
  } else if (name == "global_overrun") {
    out = at::zeros({64}, like.options().dtype(at::kInt));
    dev::launch<global_overrun_kernel>(1, 65, 0, stream, out.data_ptr<int>());
  } else if (name == "global_underrun") {
    const at::Tensor in = at::arange(1, 65, like.options().dtype(at::kInt));
    out = at::zeros({64}, like.options().dtype(at::kInt));
    dev::launch<global_underrun_kernel>(1, 64, 0, stream, in.data_ptr<int>(), out.data_ptr<int>());
  } else {
    TORCH_CHECK(false, "ssd_emu_test::broken: no case named ", name);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(ssd_emu_test, m) {
  m.def("broken(Tensor like, str name) -> Tensor");
}

TORCH_LIBRARY_IMPL(ssd_emu_test, SSD_FAST_CUDA_KEY, m) {
  m.impl("broken", &broken);
}

}  // namespace ssd_fast
