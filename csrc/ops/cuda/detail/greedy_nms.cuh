// The pieces of greedy NMS that the CUDA kernels of nms, batched_nms, multiclass_nms and
// ssd_postprocess share: boxes in the compute type, their IoU (exactly as the CPU kernels
// compute it) and the greedy resolve of 64 candidates from their suppression bits.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ops/box_math.h"
#include "ops/cuda/device.cuh"

namespace ssd_fast {
namespace cuda {

using ull = unsigned long long;

template <typename T>
struct alignas(16) Box4 {
  T x1, y1, x2, y2;
};

// IoU of a (the higher-ranked box) with b, exactly as the CPU kernels compute it.
template <typename T>
__device__ __forceinline__ T iou(const Box4<T>& a, const Box4<T>& b) {
  return box_iou_one(a.x1, a.y1, a.x2, a.y2, box_area(a.x1, a.y1, a.x2, a.y2), b.x1, b.y1, b.x2,
                     b.y2, box_area(b.x1, b.y1, b.x2, b.y2));
}

template <typename T, typename scalar_t>
__device__ __forceinline__ Box4<T> load_box(const scalar_t* p) {
  return {static_cast<T>(p[0]), static_cast<T>(p[1]), static_cast<T>(p[2]),
          static_cast<T>(p[3])};
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 65536) {
  const int64_t blocks = std::min((n + threads - 1) / threads, max_blocks);
  return static_cast<unsigned>(std::max<int64_t>(1, blocks));
}

// The greedy pass over 64 candidates in rank order, one thread: bit i of `removed` = candidate i
// is suppressed already (or absent), bit j of diag[i] = candidate i suppresses candidate j > i.
// The lowest live candidate is kept and what it suppresses removed, then the next live one.
// Returns the kept bits; `removed` gains the bits the kept candidates suppress.
__device__ __forceinline__ ull greedy_resolve(ull& removed, const ull* diag) {
  ull kept = 0;
  ull live = ~removed;
  while (live != 0) {
    const int i = __ffsll(static_cast<long long>(live)) - 1;
    kept |= 1ull << i;
    removed |= diag[i];
    live = i == 63 ? 0ull : (~removed & (~0ull << (i + 1)));
  }
  return kept;
}

}  // namespace cuda
}  // namespace ssd_fast
