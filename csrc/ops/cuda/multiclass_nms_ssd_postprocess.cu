// CUDA kernels of multiclass_nms and ssd_postprocess. Same arithmetic as the CPU kernels
// (box_iou_one, desc_key, exp_det; compiled with --fmad=false), so both devices keep the same
// boxes in the same order. No host synchronisation, fixed-size outputs, only kernel launches
// (CUDA-graph capturable):
// 1. keys [B, S, P]: desc_key of each (image, non-background class, prior) score above the
//    threshold, excluded_key() elsewhere (ssd_postprocess computes them with the decode and
//    the softmax in the same kernel);
// 2. one block per (image, class) segment, all in one launch: radix-select the top-k
//    composite keys (score, prior), bitonic sort, greedy NMS by tiles of 64 candidates;
// 3. one block per image: radix-select the top K of the kept detections of all its classes
//    under composite keys (score, class * P + prior), bitonic sort, write the padded rows.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "ops/coder_math.h"
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

constexpr int kSegThreads = 256;  // threads per (image, class) block and per image block
constexpr int kTile = 64;         // NMS candidates resolved together (one 64-bit word)
constexpr size_t kMaxSmem = 40 * 1024;  // dynamic; the kernels' static shared memory is < 8 KiB
// The (image, class) scratch that does not fit in shared memory lives in global memory, one per
// block in flight: at most this much of it, whatever B and C (blocks then take several pairs).
constexpr int64_t kMaxGlobalScratch = int64_t(128) << 20;

template <typename CK>
__device__ __forceinline__ CK max_key() { return ~CK(0); }

template <typename CK>
constexpr int used_key_bits() { return sizeof(CK) == 8 ? 64 : 96; }

// The k smallest of the valid composite keys gen(q, &key) -> bool, q in [0, n), as a
// predicate: all valid keys (all = true), or those with key >> shift <= prefix >> shift.
// MSD radix select, 8 bits per pass, with a 256-bin shared histogram; stops at the first digit
// whose bucket is taken whole. Keys are unique, so exactly min(k, valid) keys are selected.
template <typename CK>
struct Selection {
  CK prefix;
  int shift;
  bool all;
  int64_t count;
  __device__ bool operator()(CK key) const { return all || (key >> shift) <= (prefix >> shift); }
};

template <typename CK, typename Gen>
__device__ Selection<CK> block_select(const Gen& gen, int64_t n, int64_t k) {
  SSD_SHARED(unsigned[256], hist);
  SSD_SHARED(ull, total_s);
  SSD_SHARED(CK, prefix_s);
  SSD_SHARED(int64_t, remaining_s);
  SSD_SHARED(int, done_s);
  const int tid = threadIdx.x;
  if (tid == 0) total_s = 0;
  __syncthreads();
  ull mine = 0;
  for (int64_t q = tid; q < n; q += blockDim.x) {
    CK key;
    mine += gen(q, key) ? 1 : 0;
  }
  atomicAdd(&total_s, mine);
  __syncthreads();
  const int64_t total = static_cast<int64_t>(total_s);
  if (total <= k) return {CK(0), 0, true, total};
  constexpr int kTop = used_key_bits<CK>();
  if (tid == 0) {
    prefix_s = CK(0);
    remaining_s = k;
  }
  for (int shift = kTop - 8; shift >= 0; shift -= 8) {
    for (int d = tid; d < 256; d += blockDim.x) hist[d] = 0;
    __syncthreads();
    const CK prefix = prefix_s;
    for (int64_t q = tid; q < n; q += blockDim.x) {
      CK key;
      if (gen(q, key) && (shift + 8 >= kTop || (key >> (shift + 8)) == (prefix >> (shift + 8)))) {
        atomicAdd(&hist[static_cast<unsigned>(key >> shift) & 255u], 1u);
      }
    }
    __syncthreads();
    if (tid == 0) {
      int64_t remaining = remaining_s, below = 0;
      int d = 0;
      while (below + hist[d] < remaining) below += hist[d++];  // d < 256: the counts add up
      remaining -= below;
      prefix_s = prefix | (CK(d) << shift);
      remaining_s = remaining;
      done_s = hist[d] == remaining;
    }
    __syncthreads();
    if (done_s) return {prefix_s, shift, false, k};
    // (no barrier needed: thread 0 writes prefix_s again only after the next two barriers)
  }
  return {prefix_s, 0, false, k};  // not reached: a bucket of the last digit holds one key
}

// Writes the selected keys to out[0, count) (any order), pads out[count, n_pow2) with the
// largest key and sorts out[0, n_pow2) ascending (bitonic). Returns count.
template <typename CK, typename Gen>
__device__ int64_t block_select_sorted(const Gen& gen, int64_t n, int64_t k, CK* out) {
  if (k <= 0) return 0;  // max_detections = 0 (block-uniform)
  const Selection<CK> sel = block_select<CK>(gen, n, k);
  SSD_SHARED(ull, fill_s);
  if (threadIdx.x == 0) fill_s = 0;
  __syncthreads();
  for (int64_t q = threadIdx.x; q < n; q += blockDim.x) {
    CK key;
    if (gen(q, key) && sel(key)) out[atomicAdd(&fill_s, 1ull)] = key;
  }
  int64_t n_pow2 = 1;
  while (n_pow2 < sel.count) n_pow2 <<= 1;
  for (int64_t i = sel.count + threadIdx.x; i < n_pow2; i += blockDim.x) out[i] = max_key<CK>();
  __syncthreads();
  for (int64_t size = 2; size <= n_pow2; size <<= 1) {
    for (int64_t stride = size >> 1; stride > 0; stride >>= 1) {
      for (int64_t t = threadIdx.x; t < n_pow2 / 2; t += blockDim.x) {
        const int64_t lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
        const bool ascending = (lo & size) == 0;
        const CK x = out[lo], y = out[hi];
        if ((y < x) == ascending) {
          out[lo] = y;
          out[hi] = x;
        }
      }
      __syncthreads();
    }
  }
  return sel.count;
}

template <typename scalar_t>
struct BoxSource {  // boxes[b, p] or boxes[b, p, c]
  const scalar_t* data;
  int64_t image_stride, prior_stride, class_stride;
  __device__ const scalar_t* at(int64_t b, int64_t p, int64_t c) const {
    return data + b * image_stride + p * prior_stride + c * class_stride;
  }
};

struct SegmentLayout {
  int64_t b, p, s, topk, max_det, background;
  // The kept detections of one (image, class) that can reach the output: its best
  // min(topk, max_det) (any later one is outranked by as many of its own class).
  int64_t kept_cap;
  __device__ int64_t class_of(int64_t seg) const {
    return seg + (background >= 0 && seg >= background);
  }
};

inline SegmentLayout segment_layout(const MulticlassPlan& pl) {
  return {pl.b, pl.p, pl.segments_per_image, pl.topk, pl.max_det, pl.background,
          std::min(pl.topk, pl.max_det)};
}

inline int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Per (image, class) scratch: sorted candidate keys, their boxes and the kept indices, for
// cand_cap = next_pow2(topk) (at least 4, so that every array stays 16-byte aligned)
// candidates. In dynamic shared memory when it fits (topk up to ~1000 for float), else in
// global memory.
template <typename T>
struct SegmentScratch {
  int64_t cand_cap;
  explicit SegmentScratch(int64_t topk) : cand_cap(std::max<int64_t>(4, next_pow2(topk))) {}
  int64_t keys_bytes() const { return cand_cap * int64_t(sizeof(ckey_t<T>)); }
  int64_t boxes_bytes() const { return cand_cap * int64_t(sizeof(Box4<T>)); }
  int64_t bytes() const { return (keys_bytes() + boxes_bytes() + cand_cap * 4 + 15) / 16 * 16; }
};

// Step 2: per (image, class) segment, one block after the other: top-k of the segment, then
// greedy NMS by tiles of kTile candidates: each tile is tested against the kept boxes of earlier
// tiles (threads: 64 candidates x 4 slices of the kept list), then against itself (a 64 x 64 bit
// mask), and thread 0 resolves it; it stops once kept_cap boxes are kept.
template <typename scalar_t>
__global__ void __launch_bounds__(kSegThreads) segment_nms_kernel(
    const skey_t<at::opmath_type<scalar_t>>* __restrict__ keys, BoxSource<scalar_t> src,
    SegmentLayout lay, at::opmath_type<scalar_t> thr, int64_t keys_bytes, int64_t boxes_bytes,
    int64_t seg_bytes, unsigned char* __restrict__ global_scratch,
    ckey_t<at::opmath_type<scalar_t>>* __restrict__ kept_keys,
    int32_t* __restrict__ kept_count) {
  using T = at::opmath_type<scalar_t>;
  using CK = ckey_t<T>;
  SSD_DYNAMIC_SHARED(smem);
  SSD_SHARED(ull[kTile], tile_mask);
  SSD_SHARED(ull, removed_s);
  SSD_SHARED(ull, kept_s);
  unsigned char* base = global_scratch != nullptr ? global_scratch + blockIdx.x * seg_bytes : smem;
  CK* cand = reinterpret_cast<CK*>(base);
  Box4<T>* bx = reinterpret_cast<Box4<T>*>(base + keys_bytes);
  int32_t* kept = reinterpret_cast<int32_t*>(base + keys_bytes + boxes_bytes);
  const int tid = threadIdx.x;
  const int row = tid % kTile, slice = tid / kTile;
  constexpr int kSlices = kSegThreads / kTile;
  for (int64_t seg = blockIdx.x; seg < lay.b * lay.s; seg += gridDim.x) {
    const int64_t b = seg / lay.s, c = lay.class_of(seg % lay.s);
    const auto* key = keys + seg * lay.p;
    const skey_t<T> excluded = excluded_key<T>();
    auto gen = [&](int64_t p, CK& out) {
      const skey_t<T> k = key[p];
      out = compose_key<T>(k, static_cast<uint32_t>(p));
      return k != excluded;
    };
    // (block_select_sorted begins with a barrier: nobody still reads the previous segment's)
    const int64_t n = lay.kept_cap > 0 ? block_select_sorted<CK>(gen, lay.p, lay.topk, cand) : 0;
    for (int64_t i = tid; i < n; i += blockDim.x) {
      bx[i] = load_box<T>(src.at(b, low_of(cand[i]), c));
    }
    int64_t kept_n = 0;
    __syncthreads();
    for (int64_t t0 = 0; t0 < n && kept_n < lay.kept_cap; t0 += kTile) {
      const int tn = static_cast<int>(n - t0 < kTile ? n - t0 : kTile);
      if (tid < kTile) tile_mask[tid] = 0;
      if (tid == 0) removed_s = tn == kTile ? 0ull : ~0ull << tn;
      __syncthreads();
      if (row < tn) {
        const Box4<T> a = bx[t0 + row];
        for (int64_t j = slice; j < kept_n; j += kSlices) {  // against the kept boxes
          if (iou(bx[kept[j]], a) > thr) {
            atomicOr(&removed_s, 1ull << row);
            break;
          }
        }
        ull bits = 0;  // against the later candidates of the tile, a quarter of them each
        constexpr int kPer = kTile / kSlices;
        for (int t = max_(row + 1, slice * kPer); t < min_(tn, (slice + 1) * kPer); ++t) {
          if (iou(a, bx[t0 + t]) > thr) bits |= 1ull << t;
        }
        if (bits != 0) atomicOr(&tile_mask[row], bits);
      }
      __syncthreads();
      if (tid == 0) {
        ull r = removed_s;
        kept_s = greedy_resolve(r, tile_mask);
      }
      __syncthreads();
      const ull kb = kept_s;
      if (tid < kTile && ((kb >> tid) & 1)) {
        kept[kept_n + __popcll(kb & ((1ull << tid) - 1))] = static_cast<int32_t>(t0 + tid);
      }
      kept_n += __popcll(kb);
      __syncthreads();
    }
    kept_n = min_(kept_n, lay.kept_cap);
    for (int64_t i = tid; i < kept_n; i += blockDim.x) {
      kept_keys[seg * lay.kept_cap + i] = cand[kept[i]];
    }
    if (tid == 0) kept_count[seg] = static_cast<int32_t>(kept_n);
  }
}

// Step 3: per image, the max_det best kept detections over all classes, sorted, written with
// the padding rows.
template <typename scalar_t>
__global__ void __launch_bounds__(kSegThreads) merge_detections_kernel(
    const ckey_t<at::opmath_type<scalar_t>>* __restrict__ kept_keys,
    const int32_t* __restrict__ kept_count, BoxSource<scalar_t> src, SegmentLayout lay,
    int64_t sel_cap, ckey_t<at::opmath_type<scalar_t>>* __restrict__ global_scratch,
    scalar_t* __restrict__ out_boxes, scalar_t* __restrict__ out_scores,
    int64_t* __restrict__ out_labels, int64_t* __restrict__ out_num) {
  using T = at::opmath_type<scalar_t>;
  using CK = ckey_t<T>;
  SSD_DYNAMIC_SHARED(smem);
  const int64_t b = blockIdx.x;
  CK* sel = global_scratch != nullptr ? global_scratch + b * sel_cap : reinterpret_cast<CK*>(smem);
  const int64_t k = lay.kept_cap;
  auto gen = [&](int64_t q, CK& out) {
    const int64_t s = q / k, t = q % k;
    if (t >= kept_count[b * lay.s + s]) return false;
    const CK x = kept_keys[(b * lay.s + s) * k + q % k];
    out = compose_key<T>(score_key_of<T>(x),
                         static_cast<uint32_t>(lay.class_of(s) * lay.p + low_of(x)));
    return true;
  };
  const int64_t num = block_select_sorted<CK>(gen, lay.s * k, lay.max_det, sel);
  for (int64_t i = threadIdx.x; i < lay.max_det; i += blockDim.x) {
    scalar_t* row = out_boxes + (b * lay.max_det + i) * 4;
    if (i < num) {
      const uint32_t low = low_of(sel[i]);
      const int64_t c = low / lay.p, p = low % lay.p;
      const scalar_t* box = src.at(b, p, c);
      for (int q = 0; q < 4; ++q) row[q] = box[q];
      const T score = from_desc_key<T>(score_key_of<T>(sel[i]));
      out_scores[b * lay.max_det + i] = static_cast<scalar_t>(score);
      out_labels[b * lay.max_det + i] = c;
    } else {
      for (int q = 0; q < 4; ++q) row[q] = scalar_t(0);
      out_scores[b * lay.max_det + i] = scalar_t(0);
      out_labels[b * lay.max_det + i] = -1;
    }
  }
  if (threadIdx.x == 0) out_num[b] = num;
}

// Steps 2 and 3 on keys [B, S, P].
template <typename scalar_t>
void multiclass_core_cuda(const MulticlassPlan& pl, const at::Tensor& keys,
                          const BoxSource<scalar_t>& src, double iou_threshold, Detections& out,
                          dev::Stream stream) {
  using T = at::opmath_type<scalar_t>;
  using CK = ckey_t<T>;
  const SegmentLayout lay = segment_layout(pl);
  const int64_t segments = pl.b * pl.segments_per_image;
  const auto bytes = keys.options().dtype(at::kByte);
  at::Tensor kept_keys =
      at::empty({std::max<int64_t>(1, segments * lay.kept_cap * int64_t(sizeof(CK)))}, bytes);
  at::Tensor kept_count =
      at::zeros({std::max<int64_t>(1, segments)}, keys.options().dtype(at::kInt));
  if (segments > 0 && pl.p > 0) {
    const SegmentScratch<T> sc(pl.topk);
    const bool in_smem = sc.bytes() <= int64_t(kMaxSmem);
    const int64_t blocks =
        in_smem ? segments : std::min(segments, std::max<int64_t>(1, kMaxGlobalScratch / sc.bytes()));
    at::Tensor scratch = at::empty({in_smem ? 1 : blocks * sc.bytes()}, bytes);
    TORCH_CHECK(blocks < (int64_t(1) << 31), "multiclass_nms: at most 2^31 - 1 (image, class) "
                "pairs are supported, got ", segments);
    dev::launch<segment_nms_kernel<scalar_t>>(static_cast<unsigned>(blocks), kSegThreads,
        in_smem ? sc.bytes() : 0, stream, reinterpret_cast<const skey_t<T>*>(keys.data_ptr()), src,
        lay, threshold_below<T>(iou_threshold), sc.keys_bytes(), sc.boxes_bytes(), sc.bytes(),
        in_smem ? nullptr : scratch.data_ptr<uint8_t>(),
        reinterpret_cast<CK*>(kept_keys.data_ptr()), kept_count.data_ptr<int32_t>());
  }
  if (pl.b == 0) return;
  const int64_t sel_cap = next_pow2(std::max<int64_t>(1, pl.max_det));
  const bool in_smem = sel_cap * sizeof(CK) <= kMaxSmem;
  at::Tensor scratch = at::empty({in_smem ? 1 : pl.b * sel_cap * int64_t(sizeof(CK))}, bytes);
  dev::launch<merge_detections_kernel<scalar_t>>(static_cast<unsigned>(pl.b), kSegThreads,
      in_smem ? sel_cap * sizeof(CK) : 0, stream, reinterpret_cast<const CK*>(kept_keys.data_ptr()),
      kept_count.data_ptr<int32_t>(), src, lay, sel_cap,
      in_smem ? nullptr : reinterpret_cast<CK*>(scratch.data_ptr()), out.boxes.data_ptr<scalar_t>(),
      out.scores.data_ptr<scalar_t>(), out.labels.data_ptr<int64_t>(), out.num.data_ptr<int64_t>());
}

// Step 1 of multiclass_nms: keys[(b * S + s) * P + p] from scores[b, p, class_of(s)]. One
// thread per key, p fastest, so the writes coalesce (the reads are strided by C and served by
// L2, each 32-byte sector being read for several classes).
template <typename scalar_t>
__global__ void __launch_bounds__(256) multiclass_keys_kernel(
    const scalar_t* __restrict__ scores, SegmentLayout lay, int64_t c_n,
    at::opmath_type<scalar_t> thr, skey_t<at::opmath_type<scalar_t>>* __restrict__ keys) {
  using T = at::opmath_type<scalar_t>;
  const int64_t total = lay.b * lay.s * lay.p;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i % lay.p, bs = i / lay.p;
    const int64_t b = bs / lay.s, c = lay.class_of(bs % lay.s);
    const T v = static_cast<T>(scores[(b * lay.p + p) * c_n + c]);
    keys[i] = v > thr ? desc_key(v) : excluded_key<T>();
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> as_tuple(const Detections& d) {
  return {d.boxes, d.scores, d.labels, d.num};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multiclass_nms_cuda(
    const at::Tensor& boxes, const at::Tensor& scores, double score_threshold,
    double iou_threshold, int64_t topk_per_class, int64_t max_detections,
    int64_t background_class) {
  const MulticlassPlan pl = plan_multiclass_nms(boxes, scores, score_threshold, iou_threshold,
                                                topk_per_class, max_detections, background_class);
  const dev::DeviceGuard guard(boxes.device());
  Detections out = empty_detections(pl, boxes.options());
  const at::Tensor b = boxes.contiguous(), s = scores.contiguous();
  const dev::Stream stream = dev::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "multiclass_nms", [&] {
    using T = at::opmath_type<scalar_t>;
    const SegmentLayout lay = segment_layout(pl);
    const int64_t total = pl.b * pl.segments_per_image * pl.p;
    at::Tensor keys = at::empty({std::max<int64_t>(1, total * int64_t(sizeof(skey_t<T>)))},
                                b.options().dtype(at::kByte));
    if (total > 0) {
      dev::launch<multiclass_keys_kernel<scalar_t>>(blocks_for(total, 256), 256, 0, stream,
          s.data_ptr<scalar_t>(), lay, pl.c, threshold_below<T>(score_threshold),
          reinterpret_cast<skey_t<T>*>(keys.data_ptr()));
    }
    const int64_t per_prior = pl.per_class_boxes ? pl.c : 1;
    const BoxSource<scalar_t> src{b.data_ptr<scalar_t>(), pl.p * per_prior * 4, per_prior * 4,
                                  pl.per_class_boxes ? 4 : 0};
    multiclass_core_cuda<scalar_t>(pl, keys, src, iou_threshold, out, stream);
  });
  return as_tuple(out);
}

// Step 1 of ssd_postprocess, one thread per (image, prior): decode (+ clip) the box as
// decode_boxes rounds it, and the softmax over the C logits with the arithmetic of the CPU
// kernel (max, then sum of exp_det, class order; exp_det is recomputed rather than stored).
// The logit reads are strided by C across threads: fine for C up to ~100 (L1 serves them).
template <typename scalar_t>
__global__ void __launch_bounds__(128) decode_softmax_keys_kernel(
    const scalar_t* __restrict__ loc, const scalar_t* __restrict__ logits,
    const scalar_t* __restrict__ priors, SegmentLayout lay, int64_t c_n,
    at::opmath_type<scalar_t> v0, at::opmath_type<scalar_t> v1, at::opmath_type<scalar_t> v2,
    at::opmath_type<scalar_t> v3, bool clip, at::opmath_type<scalar_t> thr,
    scalar_t* __restrict__ decoded, skey_t<at::opmath_type<scalar_t>>* __restrict__ keys) {
  using T = at::opmath_type<scalar_t>;
  const T v[4] = {v0, v1, v2, v3};
  const int64_t total = lay.b * lay.p;
  for (int64_t bp = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; bp < total;
       bp += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = bp / lay.p, p = bp % lay.p;
    T x[4], d[4], y[4];
    for (int q = 0; q < 4; ++q) {
      x[q] = static_cast<T>(loc[4 * bp + q]);
      d[q] = static_cast<T>(priors[4 * p + q]);
    }
    decode_one(x, d, v, y);
    for (int q = 0; q < 4; ++q) {
      decoded[4 * bp + q] = static_cast<scalar_t>(clip ? clip01(y[q]) : y[q]);
    }
    const scalar_t* l = logits + bp * c_n;
    T m = static_cast<T>(l[0]);
    for (int64_t c = 1; c < c_n; ++c) m = max_(m, static_cast<T>(l[c]));
    T sum = T(0);
    for (int64_t c = 0; c < c_n; ++c) sum += exp_det(static_cast<T>(l[c]) - m);
    for (int64_t seg = 0; seg < lay.s; ++seg) {
      const T e = exp_det(static_cast<T>(l[lay.class_of(seg)]) - m);
      const T prob = static_cast<T>(static_cast<scalar_t>(e / sum));
      keys[(b * lay.s + seg) * lay.p + p] = prob > thr ? desc_key(prob) : excluded_key<T>();
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cuda(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
    at::ArrayRef<double> variances, bool clip, double score_threshold, double iou_threshold,
    int64_t topk_per_class, int64_t max_detections, int64_t background_class) {
  const MulticlassPlan pl =
      plan_ssd_postprocess(loc, conf_logits, priors, variances, score_threshold, iou_threshold,
                           topk_per_class, max_detections, background_class);
  const dev::DeviceGuard guard(loc.device());
  Detections out = empty_detections(pl, loc.options());
  const at::Tensor l = loc.contiguous(), cl = conf_logits.contiguous(), pr = priors.contiguous();
  at::Tensor decoded = at::empty({pl.b, pl.p, 4}, loc.options());
  const dev::Stream stream = dev::current_stream();
  const auto dtype = l.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "ssd_postprocess", [&] {
    using T = at::opmath_type<scalar_t>;
    const SegmentLayout lay = segment_layout(pl);
    const int64_t total = pl.b * pl.segments_per_image * pl.p;
    at::Tensor keys = at::empty({std::max<int64_t>(1, total * int64_t(sizeof(skey_t<T>)))},
                                l.options().dtype(at::kByte));
    if (total > 0) {  // S >= 1, so C >= 1
      dev::launch<decode_softmax_keys_kernel<scalar_t>>(blocks_for(pl.b * pl.p, 128), 128, 0,
          stream, l.data_ptr<scalar_t>(), cl.data_ptr<scalar_t>(), pr.data_ptr<scalar_t>(), lay,
          pl.c, T(variances[0]), T(variances[1]), T(variances[2]), T(variances[3]), clip,
          threshold_below<T>(score_threshold), decoded.data_ptr<scalar_t>(),
          reinterpret_cast<skey_t<T>*>(keys.data_ptr()));
    }
    const BoxSource<scalar_t> src{decoded.data_ptr<scalar_t>(), pl.p * 4, 4, 0};
    multiclass_core_cuda<scalar_t>(pl, keys, src, iou_threshold, out, stream);
  });
  return as_tuple(out);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, SSD_FAST_CUDA_KEY, m) {
  m.impl("multiclass_nms", &multiclass_nms_cuda);
  m.impl("ssd_postprocess", &ssd_postprocess_cuda);
}

}  // namespace ssd_fast
