// Dynamic scheduling on top of at::parallel_for, for items of uneven cost (images with more
// or fewer GTs): each thread takes the next item when it is done with one, instead of a fixed
// contiguous share (ssd_targets, 8 images with 100, 100, then 2 GTs each, 2 threads:
// 476 -> 251 us). Every item's result must not depend on the thread that computes it.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

namespace ssd_fast {
namespace cpu {

// f(order[i]) for i in [0, n), items taken in that order (the costliest first balances best).
template <typename F>
void parallel_dynamic(int64_t n, const int64_t* order, F f) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) f(order[i]);
  });
}

}  // namespace cpu
}  // namespace ssd_fast
