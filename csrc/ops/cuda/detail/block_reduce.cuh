// Block-wide reductions used by the per-image CUDA kernels (one block = one image).
#pragma once

#include <cstdint>

#include "ops/cuda/device.cuh"

namespace ssd_fast {
namespace cuda {

constexpr int kWarp = 32;
constexpr int kMaxWarps = 32;

// A candidate in an arg-max: larger v wins; ties go to the smaller a, then the smaller b.
// a = INT32_MAX marks "no candidate" (v is then irrelevant, any real candidate beats it).
template <typename T>
struct Cand {
  T v;
  int32_t a, b;
};

template <typename T>
__device__ __forceinline__ bool better(const Cand<T>& x, const Cand<T>& y) {
  if (x.a == INT32_MAX) return false;
  if (y.a == INT32_MAX) return true;
  return x.v > y.v || (x.v == y.v && (x.a < y.a || (x.a == y.a && x.b < y.b)));
}

template <typename T>
__device__ __forceinline__ Cand<T> no_cand() {
  return {T(-1), INT32_MAX, INT32_MAX};
}

template <typename T>
__device__ __forceinline__ Cand<T> warp_best(Cand<T> c) {
  for (int off = kWarp / 2; off > 0; off /= 2) {
    Cand<T> o;
    o.v = __shfl_down_sync(0xffffffffu, c.v, off);
    o.a = __shfl_down_sync(0xffffffffu, c.a, off);
    o.b = __shfl_down_sync(0xffffffffu, c.b, off);
    if (better(o, c)) c = o;
  }
  return c;
}

// The best candidate of the block, returned to every thread. `red` holds kMaxWarps entries,
// `out` one; all threads of the block must call it (it contains __syncthreads).
template <typename T>
__device__ Cand<T> block_best(Cand<T> c, Cand<T>* red, Cand<T>* out) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int nwarps = (blockDim.x + kWarp - 1) / kWarp;
  c = warp_best(c);
  if (lane == 0) red[warp] = c;
  __syncthreads();
  if (warp == 0) {
    c = lane < nwarps ? red[lane] : no_cand<T>();
    c = warp_best(c);
    if (lane == 0) *out = c;
  }
  __syncthreads();
  return *out;
}

// Sum over the block, returned to every thread (same calling rules as block_best). The order
// of the additions is fixed by the launch shape, so float sums are deterministic.
template <typename T>
__device__ T block_sum(T x, T* red, T* out) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int nwarps = (blockDim.x + kWarp - 1) / kWarp;
  for (int off = kWarp / 2; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
  if (lane == 0) red[warp] = x;
  __syncthreads();
  if (warp == 0) {
    x = lane < nwarps ? red[lane] : T(0);
    for (int off = kWarp / 2; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
    if (lane == 0) *out = x;
  }
  __syncthreads();
  return *out;
}

}  // namespace cuda
}  // namespace ssd_fast
