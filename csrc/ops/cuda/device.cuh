// The one door between ssd_fast's CUDA kernels and launchers (csrc/ops/cuda/*.cu) and CUDA:
// every CUDA-only thing they use beyond the built-ins (threadIdx, __syncthreads, __shfl_down_sync,
// __ballot_sync, __popc[ll], __ffsll, atomicAdd, atomicOr) comes from here: shared memory, the
// launch and its check, the stream, the device guard, the dynamic shared-memory limit, memset and
// the two cub device-wide calls. Under nvcc it is CUDA itself. Compiled by the host compiler
// with SSD_FAST_EMU (the test-only module ssd_fast._C_emu), the built-ins and everything below
// come from the emulated device of csrc/emu/emu.h instead, so that CI executes these very
// sources without a GPU.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cub/cub.cuh>
#elif defined(SSD_FAST_EMU)
#include <c10/core/DeviceGuard.h>

#include "emu/emu.h"
#else
#error "csrc/ops/cuda/*.cu build with nvcc, or for the emulated device (SSD_FAST_EMU)"
#endif

namespace ssd_fast {
namespace dev {

template <typename T>
using type_t = T;

// SSD_SHARED(int32_t[256], hist) declares `__shared__ int32_t hist[256]` (static shared memory);
// SSD_DYNAMIC_SHARED(smem) the block's dynamic shared memory, 16-byte aligned.
#if defined(__CUDACC__)
#define SSD_SHARED(T, name) __shared__ ::ssd_fast::dev::type_t<T> name
#define SSD_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#else
#define SSD_SHARED(T, name) SSD_EMU_SHARED(T, name)
#define SSD_DYNAMIC_SHARED(name) unsigned char* const name = ::ssd_emu::dynamic_shared()
#endif

// The dispatch key the .cu files register their kernels for: TORCH_LIBRARY_IMPL(ssd_fast,
// SSD_FAST_CUDA_KEY, m). The emulated device is torch's PrivateUse1 backend, named "emu".
#if defined(__CUDACC__)
#define SSD_FAST_CUDA_KEY CUDA
#else
#define SSD_FAST_CUDA_KEY PrivateUse1
#endif

#if defined(__CUDACC__)
using Stream = cudaStream_t;
inline Stream current_stream() { return at::cuda::getCurrentCUDAStream(); }
using DeviceGuard = c10::cuda::CUDAGuard;
#else
struct Stream {};  // the emulated device runs each launch when it is made, in program order
inline Stream current_stream() { return {}; }
using DeviceGuard = c10::DeviceGuard;
#endif

// K<<<grid, block, dynamic_smem, stream>>>(args...), then the launch check.
template <auto K, typename... A>
void launch(dim3 grid, dim3 block, size_t dynamic_smem, Stream stream, A&&... args) {
#if defined(__CUDACC__)
  K<<<grid, block, dynamic_smem, stream>>>(std::forward<A>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#else
  (void)stream;
  ::ssd_emu::launch_with<K>(K, grid, block, dynamic_smem, std::forward<A>(args)...);
#endif
}

// The most dynamic shared memory a block may opt in to on `device` (227 KiB on an H100/H200).
inline int max_dynamic_smem(const at::Device& device) {
#if defined(__CUDACC__)
  int bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        device.index()));
  return bytes;
#else
  (void)device;
  return ::ssd_emu::kMaxDynamicSmemOptin;
#endif
}

// Lets kernel K use up to `bytes` of dynamic shared memory per block (above the default 48 KiB).
template <auto K>
void set_max_dynamic_smem(int bytes) {
#if defined(__CUDACC__)
  C10_CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
#else
  ::ssd_emu::set_max_dynamic_smem({reinterpret_cast<const void*>(K), ::ssd_emu::kernel_name<K>()},
                                  bytes);
#endif
}

// set_max_dynamic_smem<K>(bytes) once per (kernel, device), the first time: the attribute is the
// kernel's, shared by every host thread, so setting it per call would race (a thread lowering
// it between another thread's setting and its launch). `bytes`: the most it will ever need.
constexpr int kMaxDevices = 64;
template <auto K>
void allow_dynamic_smem(const at::Device& device, int bytes) {
  static std::once_flag once[kMaxDevices];
  TORCH_CHECK(device.index() >= 0 && device.index() < kMaxDevices, "device index out of range: ",
              device);
  std::call_once(once[device.index()], [&] { set_max_dynamic_smem<K>(bytes); });
}

inline void memset_async(void* p, int value, size_t bytes, Stream stream) {
#if defined(__CUDACC__)
  C10_CUDA_CHECK(cudaMemsetAsync(p, value, bytes, stream));
#else
  (void)stream;
  std::memset(p, value, bytes);
#endif
}

#if defined(__CUDACC__)
template <typename Fn>
void cub_call(const at::TensorOptions& scratch, Fn&& fn) {  // fn(temp, bytes): size, then the call
  size_t bytes = 0;
  C10_CUDA_CHECK(fn(nullptr, bytes));
  at::Tensor temp = at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))},
                              scratch.dtype(at::kByte));
  C10_CUDA_CHECK(fn(temp.data_ptr(), bytes));
}
#endif

// cub::DeviceRadixSort::SortPairs: the n (key, value) pairs sorted by bits [begin_bit, end_bit)
// of the unsigned keys, ascending and stable. `scratch`: where cub's temporary storage goes.
template <typename K, typename V>
void radix_sort_pairs(const K* keys_in, K* keys_out, const V* vals_in, V* vals_out, int64_t n,
                      int begin_bit, int end_bit, Stream stream, const at::TensorOptions& scratch) {
#if defined(__CUDACC__)
  cub_call(scratch, [&](void* temp, size_t& bytes) {
    return cub::DeviceRadixSort::SortPairs(temp, bytes, keys_in, keys_out, vals_in, vals_out,
                                           static_cast<int>(n), begin_bit, end_bit, stream);
  });
#else
  (void)stream;
  (void)scratch;
  const int width = end_bit - begin_bit;
  const K field = width >= int(8 * sizeof(K)) ? ~K(0) : ((K(1) << width) - 1);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return ((keys_in[a] >> begin_bit) & field) < ((keys_in[b] >> begin_bit) & field);
  });
  std::vector<K> k(n);
  std::vector<V> v(n);
  for (int64_t i = 0; i < n; ++i) {
    k[i] = keys_in[order[i]];
    v[i] = vals_in[order[i]];
  }
  std::copy(k.begin(), k.end(), keys_out);
  std::copy(v.begin(), v.end(), vals_out);
#endif
}

// cub::DeviceSelect::Flagged: out = the in[i] with flags[i] != 0, in order; *num_selected (on the
// device) = their number.
template <typename T, typename F, typename N>
void select_flagged(const T* in, const F* flags, T* out, N* num_selected, int64_t n,
                    Stream stream, const at::TensorOptions& scratch) {
#if defined(__CUDACC__)
  cub_call(scratch, [&](void* temp, size_t& bytes) {
    return cub::DeviceSelect::Flagged(temp, bytes, in, flags, out, num_selected,
                                      static_cast<int>(n), stream);
  });
#else
  (void)stream;
  (void)scratch;
  N count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (flags[i]) out[count++] = in[i];
  }
  *num_selected = count;
#endif
}

}  // namespace dev
}  // namespace ssd_fast
