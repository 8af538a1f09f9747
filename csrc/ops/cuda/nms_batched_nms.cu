// CUDA kernels of nms and batched_nms. Same arithmetic as the CPU kernels (box_iou_one, desc_key;
// compiled with --fmad=false), so both devices keep the same boxes in the same order.
//
// The bitmask algorithm with the greedy pass on the GPU, by chunks. Boxes are sorted by rank (cub radix sort of desc_key: stable, so ties by lower index);
// batched_nms then sorts the rank order by class (stable), so each class is a contiguous
// segment, still in rank order. The sorted positions are processed in chunks of kChunk:
// (a) boxes of the chunk in a segment that began in an earlier chunk are tested against that
//     segment's kept boxes (suppress_by_kept_kernel);
// (b) IoU > threshold bits between positions of the chunk in the same segment
//     (chunk_mask_kernel: kChunk^2 / 8 bytes at most, 32 MiB);
// (c) one block resolves the chunk greedily from (a) and (b) and appends the kept positions
//     to the kept list (chunk_greedy_kernel).
// With N <= kChunk this is the classic single-mask algorithm (N^2 / 8 bytes of mask); larger N
// never needs more than one chunk's mask, and batched_nms memory is O(N) for any number of
// classes. The mask stays on the device; the only host synchronisation reads the output size.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/cuda/detail/greedy_nms.cuh"
#include "ops/cuda/device.cuh"
#include "ops/nms_checks.h"
#include "ops/nms_math.h"

namespace ssd_fast {
namespace {

using cuda::Box4;
using cuda::blocks_for;
using cuda::greedy_resolve;
using cuda::iou;
using cuda::load_box;
using cuda::ull;

constexpr int kChunk = 16384;              // positions per chunk: a 32 MiB mask at most
constexpr int kChunkWords = kChunk / 64;   // 64-bit mask words per chunk row
constexpr int kKeptSlices = 16;            // gridDim.y of suppress_by_kept_kernel

// keys[i] = desc_key(scores[i]), vals[i] = i.
template <typename scalar_t>
__global__ void __launch_bounds__(256) score_keys_kernel(
    const scalar_t* __restrict__ scores, int64_t n,
    skey_t<at::opmath_type<scalar_t>>* __restrict__ keys, int32_t* __restrict__ vals) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = desc_key(static_cast<at::opmath_type<scalar_t>>(scores[i]));
    vals[i] = static_cast<int32_t>(i);
  }
}

// class_keys[r] = idxs[order[r]] as an order-preserving unsigned key, ranks[r] = r.
__global__ void __launch_bounds__(256) class_keys_kernel(const int64_t* __restrict__ idxs,
                                  const int32_t* __restrict__ order, int64_t n,
                                  uint64_t* __restrict__ class_keys, int32_t* __restrict__ ranks) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < n;
       r += int64_t(gridDim.x) * blockDim.x) {
    class_keys[r] = static_cast<uint64_t>(idxs[order[r]]) ^ (uint64_t(1) << 63);
    ranks[r] = static_cast<int32_t>(r);
  }
}

// Segment bounds of every position of the class-sorted keys, by binary search.
__global__ void __launch_bounds__(256) segment_bounds_kernel(
    const uint64_t* __restrict__ keys, int64_t n, int32_t* __restrict__ seg_start,
    int32_t* __restrict__ seg_end) {
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < n;
       q += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t k = keys[q];
    int64_t lo = 0, hi = q;  // first position with key == k
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (keys[mid] < k) lo = mid + 1; else hi = mid;
    }
    seg_start[q] = static_cast<int32_t>(lo);
    lo = q + 1;
    hi = n;  // first position with key > k
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (keys[mid] <= k) lo = mid + 1; else hi = mid;
    }
    seg_end[q] = static_cast<int32_t>(lo);
  }
}

// Boxes in processing order, compute type: sorted[q] = boxes[order[grouped ? grouped[q] : q]].
template <typename scalar_t>
__global__ void __launch_bounds__(256) gather_boxes_kernel(const scalar_t* __restrict__ boxes,
                                    const int32_t* __restrict__ order,
                                    const int32_t* __restrict__ grouped, int64_t n,
                                    Box4<at::opmath_type<scalar_t>>* __restrict__ sorted) {
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < n;
       q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = order[grouped != nullptr ? grouped[q] : q];
    sorted[q] = load_box<at::opmath_type<scalar_t>>(boxes + 4 * i);
  }
}

// (a) Positions of the chunk that belong to a segment begun in an earlier chunk, against the
// kept boxes of that segment (a suffix of the kept list, which is in position order). One
// thread per position; blockIdx.y takes a slice of the kept boxes, read through shared memory
// in tiles of 256. Results are OR-ed into removed[] (bit = position - chunk_begin).
template <typename T>
__global__ void __launch_bounds__(256) suppress_by_kept_kernel(
    const Box4<T>* __restrict__ boxes, const int32_t* __restrict__ seg_start,
    const int32_t* __restrict__ seg_end, const int32_t* __restrict__ kept_pos,
    const int32_t* __restrict__ kept_count, int32_t chunk_begin, int32_t chunk_len, T thr,
    ull* __restrict__ removed) {
  const int32_t s0 = seg_start[chunk_begin];
  if (s0 == chunk_begin) return;  // the chunk starts a segment: nothing kept before it
  SSD_SHARED(Box4<T>[256], tile);
  SSD_SHARED(int32_t, lo_s);
  const int32_t kept_n = *kept_count;
  if (threadIdx.x == 0) {  // first kept position >= s0
    int32_t lo = 0, hi = kept_n;
    while (lo < hi) {
      const int32_t mid = (lo + hi) / 2;
      if (kept_pos[mid] < s0) lo = mid + 1; else hi = mid;
    }
    lo_s = lo;
  }
  __syncthreads();
  const int32_t lo = lo_s;
  const int32_t slices = static_cast<int32_t>(gridDim.y);
  const int32_t per = (kept_n - lo + slices - 1) / slices;
  const int32_t j0 = lo + static_cast<int32_t>(blockIdx.y) * per, j1 = min_(kept_n, j0 + per);
  const int32_t q_end = min_(seg_end[chunk_begin], chunk_begin + chunk_len);
  const int32_t rel = blockIdx.x * 256 + threadIdx.x;
  const int32_t q = chunk_begin + rel;
  const bool active = rel < chunk_len && q < q_end;
  Box4<T> box{};
  if (active) box = boxes[q];
  bool sup = !active;
  for (int32_t jt = j0; jt < j1; jt += 256) {
    if (__syncthreads_and(sup)) break;  // also: nobody still reads the previous tile
    if (jt + threadIdx.x < j1) tile[threadIdx.x] = boxes[kept_pos[jt + threadIdx.x]];
    __syncthreads();
    const int32_t nt = min_(256, j1 - jt);
    for (int32_t t = 0; t < nt && !sup; ++t) sup = iou(tile[t], box) > thr;
  }
  const unsigned ballot = __ballot_sync(0xffffffffu, active && sup);
  if ((threadIdx.x & 31) == 0 && ballot != 0) {
    const int32_t first = rel;  // lane 0's position; a multiple of 32
    atomicOr(&removed[first / 64], static_cast<ull>(ballot) << (first % 64));
  }
}

// (b) mask[i * words + cb] bit t: IoU(position i, position cb * 64 + t) > thr, for positions of
// the chunk in the same segment, t > i. Block (cb, rb) of 64 threads: one row each. Rows removed
// by (a) and column blocks past a row's segment are skipped: (c) never reads them.
template <typename T>
__global__ void __launch_bounds__(64) chunk_mask_kernel(
    const Box4<T>* __restrict__ boxes, const int32_t* __restrict__ seg_end, int32_t chunk_begin,
    int32_t len, int32_t words, T thr, const ull* __restrict__ removed, ull* __restrict__ mask) {
  const int32_t rb = blockIdx.y, cb = blockIdx.x;
  if (cb < rb) return;
  SSD_SHARED(Box4<T>[64], col);
  const int32_t j0 = cb * 64;
  const int32_t cols = min_(64, len - j0);
  if (static_cast<int32_t>(threadIdx.x) < cols) {
    col[threadIdx.x] = boxes[chunk_begin + j0 + threadIdx.x];
  }
  __syncthreads();
  const int32_t i = rb * 64 + threadIdx.x;
  if (i >= len || ((removed[rb] >> threadIdx.x) & 1)) return;
  const int32_t se = seg_end[chunk_begin + i] - chunk_begin;  // relative; may exceed len
  if (j0 >= se) return;
  const Box4<T> a = boxes[chunk_begin + i];
  const int32_t jend = min_(cols, se - j0);
  ull bits = 0;
  for (int32_t t = cb == rb ? static_cast<int32_t>(threadIdx.x) + 1 : 0; t < jend; ++t) {
    if (iou(a, col[t]) > thr) bits |= 1ull << t;
  }
  mask[static_cast<int64_t>(i) * words + cb] = bits;
}

// (c) Greedy pass over the chunk in one block, 64 rows at a time: thread 0 resolves the rows of
// word w from the diagonal mask words (only its live rows are visited), then every thread ORs
// the kept rows' mask words into one later word of removed[]. kept positions are appended in
// order. Tuned for kChunk = 16384: 256 threads, one later word each.
__global__ void __launch_bounds__(kChunkWords) chunk_greedy_kernel(
    const ull* __restrict__ mask, const int32_t* __restrict__ seg_end, int32_t chunk_begin,
    int32_t len, int32_t words, const ull* __restrict__ removed_in, int32_t* __restrict__ kept_pos,
    int32_t* __restrict__ kept_count) {
  SSD_SHARED(ull[kChunkWords], removed);
  SSD_SHARED(ull[64], diag);
  SSD_SHARED(int32_t[64], row_end);
  SSD_SHARED(ull, kept_s);
  const int tid = threadIdx.x;
  for (int w = tid; w < words; w += blockDim.x) removed[w] = removed_in[w];
  int32_t kept_n = *kept_count;
  __syncthreads();
  for (int32_t w = 0; w < words; ++w) {
    const int32_t row0 = w * 64;
    const int32_t rows = min_(64, len - row0);
    if (tid < rows) {
      const bool dead = (removed[w] >> tid) & 1;  // removed by (a) or an earlier word
      diag[tid] = dead ? 0 : mask[static_cast<int64_t>(row0 + tid) * words + w];
      row_end[tid] = seg_end[chunk_begin + row0 + tid] - chunk_begin;
    }
    __syncthreads();
    if (tid == 0) {
      ull r = removed[w] | (rows < 64 ? ~0ull << rows : 0ull);
      kept_s = greedy_resolve(r, diag);
      removed[w] = r;
    }
    __syncthreads();
    const ull kept = kept_s;
    if (kept != 0) {
      for (int32_t w2 = w + 1 + tid; w2 < words; w2 += blockDim.x) {
        ull acc = 0;
        for (ull k = kept; k != 0; k &= k - 1) {
          const int i = __ffsll(static_cast<long long>(k)) - 1;
          if (w2 * 64 < row_end[i]) acc |= mask[static_cast<int64_t>(row0 + i) * words + w2];
        }
        removed[w2] |= acc;
      }
      if (tid < 64 && ((kept >> tid) & 1)) {
        kept_pos[kept_n + __popcll(kept & ((1ull << tid) - 1))] = chunk_begin + row0 + tid;
      }
      kept_n += __popcll(kept);
    }
    __syncthreads();
  }
  if (tid == 0) *kept_count = kept_n;
}

// flags[grouped[kept_pos[k]]] = 1 for the kept positions: their ranks.
__global__ void __launch_bounds__(256) kept_flags_kernel(const int32_t* __restrict__ kept_pos,
                                  const int32_t* __restrict__ kept_count,
                                  const int32_t* __restrict__ grouped, uint8_t* __restrict__ flags,
                                  int64_t n) {
  const int64_t count = *kept_count;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count && k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    flags[grouped[kept_pos[k]]] = 1;
  }
}

// out[k] = src[pos ? pos[k] : k] for k < count, as int64.
__global__ void __launch_bounds__(256) gather_kept_kernel(
    const int32_t* __restrict__ src, const int32_t* __restrict__ pos, int64_t count,
    int64_t* __restrict__ out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count;
       k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = src[pos != nullptr ? pos[k] : k];
  }
}

// Runs (a), (b), (c) over every chunk of the n boxes in processing order. Returns the kept
// positions (ascending) and their count, both on the device.
template <typename T>
std::pair<at::Tensor, at::Tensor> chunked_nms(const at::Tensor& sorted_boxes,
                                              const at::Tensor& seg_start,
                                              const at::Tensor& seg_end, int64_t n, T thr,
                                              dev::Stream stream) {
  const auto opts = seg_start.options();
  at::Tensor kept_pos = at::empty({n}, opts);
  at::Tensor kept_count = at::zeros({1}, opts);
  const int64_t chunk = std::min<int64_t>(n, kChunk);
  const int32_t max_words = static_cast<int32_t>((chunk + 63) / 64);
  at::Tensor mask = at::empty({chunk * max_words}, opts.dtype(at::kLong));
  at::Tensor removed = at::empty({max_words}, opts.dtype(at::kLong));
  const auto* boxes = reinterpret_cast<const Box4<T>*>(sorted_boxes.data_ptr());
  ull* mask_p = reinterpret_cast<ull*>(mask.data_ptr<int64_t>());
  ull* removed_p = reinterpret_cast<ull*>(removed.data_ptr<int64_t>());
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int32_t len = static_cast<int32_t>(std::min<int64_t>(kChunk, n - begin));
    const int32_t words = (len + 63) / 64;
    dev::memset_async(removed_p, 0, words * sizeof(ull), stream);
    if (begin > 0) {
      dev::launch<suppress_by_kept_kernel<T>>(dim3((len + 255) / 256, kKeptSlices), 256, 0, stream,
          boxes, seg_start.data_ptr<int32_t>(), seg_end.data_ptr<int32_t>(),
          kept_pos.data_ptr<int32_t>(), kept_count.data_ptr<int32_t>(), static_cast<int32_t>(begin),
          len, thr, removed_p);
    }
    dev::launch<chunk_mask_kernel<T>>(dim3(words, words), 64, 0, stream, boxes,
        seg_end.data_ptr<int32_t>(), static_cast<int32_t>(begin), len, words, thr, removed_p,
        mask_p);
    dev::launch<chunk_greedy_kernel>(1, kChunkWords, 0, stream, mask_p, seg_end.data_ptr<int32_t>(),
        static_cast<int32_t>(begin), len, words, removed_p, kept_pos.data_ptr<int32_t>(),
        kept_count.data_ptr<int32_t>());
  }
  return {kept_pos, kept_count};
}

// Rank order of the scores: order[r] = index of the box of rank r.
template <typename scalar_t>
at::Tensor rank_order_cuda(const at::Tensor& scores, int64_t n, dev::Stream stream) {
  using acc_t = at::opmath_type<scalar_t>;
  using key_t = skey_t<acc_t>;
  const auto iopts = scores.options().dtype(at::kInt);
  at::Tensor keys = at::empty({2 * n * static_cast<int64_t>(sizeof(key_t))},
                              scores.options().dtype(at::kByte));
  key_t* keys_in = reinterpret_cast<key_t*>(keys.data_ptr());
  key_t* keys_out = keys_in + n;
  at::Tensor vals = at::empty({n}, iopts), order = at::empty({n}, iopts);
  dev::launch<score_keys_kernel<scalar_t>>(blocks_for(n, 256), 256, 0, stream,
      scores.data_ptr<scalar_t>(), n, keys_in, vals.data_ptr<int32_t>());
  dev::radix_sort_pairs(keys_in, keys_out, vals.data_ptr<int32_t>(), order.data_ptr<int32_t>(), n,
                        0, int(sizeof(key_t) * 8), stream, scores.options());
  return order;
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = check_nms_args("nms", boxes, scores, iou_threshold);
  const dev::DeviceGuard guard(boxes.device());
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
  const dev::Stream stream = dev::current_stream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "nms_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor order = rank_order_cuda<scalar_t>(s, n, stream);
    at::Tensor sorted = at::empty({n, static_cast<int64_t>(sizeof(Box4<acc_t>))},
                                  b.options().dtype(at::kByte));
    dev::launch<gather_boxes_kernel<scalar_t>>(blocks_for(n, 256), 256, 0, stream,
        b.data_ptr<scalar_t>(), order.data_ptr<int32_t>(), nullptr, n,
        reinterpret_cast<Box4<acc_t>*>(sorted.data_ptr()));
    const at::Tensor seg_start = at::zeros({n}, order.options());  // one segment: [0, n)
    const at::Tensor seg_end = at::full({n}, n, order.options());
    auto [kept_pos, kept_count] = chunked_nms<acc_t>(sorted, seg_start, seg_end, n,
                                                     threshold_below<acc_t>(iou_threshold), stream);
    const int64_t count = kept_count.item<int32_t>();  // the one host synchronisation
    out = at::empty({count}, b.options().dtype(at::kLong));
    if (count > 0) {
      dev::launch<gather_kept_kernel>(blocks_for(count, 256), 256, 0, stream,
          order.data_ptr<int32_t>(), kept_pos.data_ptr<int32_t>(), count, out.data_ptr<int64_t>());
    }
  });
  return out;
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                            const at::Tensor& idxs, double iou_threshold) {
  constexpr const char* op = "batched_nms";
  const int64_t n = check_nms_args(op, boxes, scores, iou_threshold);
  check_idxs(op, boxes, idxs);
  const dev::DeviceGuard guard(boxes.device());
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
  const at::Tensor cls = idxs.to(at::kLong).contiguous();
  const dev::Stream stream = dev::current_stream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), op, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor order = rank_order_cuda<scalar_t>(s, n, stream);
    const auto iopts = order.options();
    // group the rank order by class (stable: rank order within each class)
    at::Tensor ckeys = at::empty({2 * n}, cls.options());
    uint64_t* ckeys_in = reinterpret_cast<uint64_t*>(ckeys.data_ptr<int64_t>());
    uint64_t* ckeys_out = ckeys_in + n;
    at::Tensor ranks = at::empty({n}, iopts), grouped = at::empty({n}, iopts);
    dev::launch<class_keys_kernel>(blocks_for(n, 256), 256, 0, stream, cls.data_ptr<int64_t>(),
        order.data_ptr<int32_t>(), n, ckeys_in, ranks.data_ptr<int32_t>());
    dev::radix_sort_pairs(ckeys_in, ckeys_out, ranks.data_ptr<int32_t>(),
                          grouped.data_ptr<int32_t>(), n, 0, 64, stream, b.options());
    at::Tensor seg_start = at::empty({n}, iopts), seg_end = at::empty({n}, iopts);
    dev::launch<segment_bounds_kernel>(blocks_for(n, 256), 256, 0, stream, ckeys_out, n,
        seg_start.data_ptr<int32_t>(), seg_end.data_ptr<int32_t>());
    at::Tensor sorted = at::empty({n, static_cast<int64_t>(sizeof(Box4<acc_t>))},
                                  b.options().dtype(at::kByte));
    dev::launch<gather_boxes_kernel<scalar_t>>(blocks_for(n, 256), 256, 0, stream,
        b.data_ptr<scalar_t>(), order.data_ptr<int32_t>(), grouped.data_ptr<int32_t>(), n,
        reinterpret_cast<Box4<acc_t>*>(sorted.data_ptr()));
    auto [kept_pos, kept_count] = chunked_nms<acc_t>(sorted, seg_start, seg_end, n,
                                                     threshold_below<acc_t>(iou_threshold), stream);
    // back to rank order: flag the kept ranks, then select order[r] for the flagged r
    at::Tensor flags = at::zeros({n}, b.options().dtype(at::kByte));
    dev::launch<kept_flags_kernel>(blocks_for(n, 256), 256, 0, stream, kept_pos.data_ptr<int32_t>(),
        kept_count.data_ptr<int32_t>(), grouped.data_ptr<int32_t>(), flags.data_ptr<uint8_t>(), n);
    at::Tensor selected = at::empty({n}, iopts), num_selected = at::empty({1}, cls.options());
    dev::select_flagged(order.data_ptr<int32_t>(), flags.data_ptr<uint8_t>(),
                        selected.data_ptr<int32_t>(), num_selected.data_ptr<int64_t>(), n, stream,
                        b.options());
    const int64_t count = kept_count.item<int32_t>();  // the one host synchronisation
    out = at::empty({count}, b.options().dtype(at::kLong));
    if (count > 0) {
      dev::launch<gather_kept_kernel>(blocks_for(count, 256), 256, 0, stream,
          selected.data_ptr<int32_t>(), nullptr, count, out.data_ptr<int64_t>());
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, SSD_FAST_CUDA_KEY, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace ssd_fast
