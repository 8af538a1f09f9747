// CPU kernels of multibox_loss and multibox_loss_backward: the SSD loss in two passes over
// the head outputs, without a [B, P, C] temporary.
//
// Forward: (1) by tiles of kTilePriors priors, in parallel: the tile's logits class-major in
// an L1 buffer, a vectorised logsumexp (exp_nonpos/log_det, ops/float_math.h), the background
// cross-entropy of every prior into bg_ce [B, P], and the positives' smooth L1 and
// cross-entropy summed per tile; (2) per image, in parallel: hard negative mining on bg_ce
// (the hard_negative_mining selection of ops/cpu/detail/mining.h), then the mined negatives' bg_ce
// summed. Partial sums are in double, per tile and per image, added in a fixed order: the
// result does not depend on the thread count.
// Backward: per chunk of priors, grad_conf is zeroed, then the masked rows (a few percent of the
// priors) are gathered kTilePriors at a time into a tile and get their softmax there.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "ops/cpu/detail/clones.h"
#include "ops/cpu/detail/mining.h"
#include "ops/cpu/detail/softmax_tile.h"
#include "ops/loss_checks.h"
#include "ops/loss_math.h"

namespace ssd_fast {
namespace {

using cpu::kTilePriors;

struct TileSums {
  double loc = 0, conf = 0;  // positives' smooth L1 and cross-entropy
  int64_t num_pos = 0;
  int64_t bad_label = -1;    // a label >= C met in the tile
};

// Pass (1) over the priors [0, n_prior) of the whole batch, rows of c_n logits.
template <typename T>
std::vector<TileSums> tile_pass(const T* loc, const T* conf, const T* loc_t, const int64_t* lab,
                                int64_t n_prior, int64_t c_n, T* bg_ce) {
  std::vector<TileSums> sums((n_prior + kTilePriors - 1) / kTilePriors);
  at::parallel_for(0, static_cast<int64_t>(sums.size()), 8, [&](int64_t lo, int64_t hi) {
    std::vector<T> buf(c_n * kTilePriors);
    std::array<T, kTilePriors> m, log_sum;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t p0 = t * kTilePriors, n = std::min(kTilePriors, n_prior - p0);
      const T* rows = conf + p0 * c_n;
      cpu::load_tile(rows, n, c_n, buf.data());
      cpu::log_sum_exp_tile(buf.data(), m.data(), log_sum.data(), c_n, n);
      T* __restrict bg = bg_ce + p0;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) bg[j] = cross_entropy(m[j], buf[j], log_sum[j]);  // class 0
      TileSums s;
      for (int64_t j = 0; j < n; ++j) {  // positives: a few percent of the priors
        const int64_t p = p0 + j, label = lab[p];
        if (label <= 0) continue;
        if (label >= c_n) {
          s.bad_label = label;
          continue;
        }
        s.conf += cross_entropy(m[j], rows[j * c_n + label], log_sum[j]);
        for (int q = 0; q < 4; ++q) s.loc += smooth_l1(loc[4 * p + q] - loc_t[4 * p + q]);
        ++s.num_pos;
      }
      sums[t] = s;
    }
  });
  return sums;
}

// Sum of loss[p] over the selected negatives (mask[p] && labels[p] == 0), in double: kSumLanes
// running sums over p mod kSumLanes, added in a fixed order, so every build and clone gives
// the same bits.
constexpr int64_t kSumLanes = 8;

template <typename T>
SSD_FAST_INLINE double mined_negatives_sum_impl(const T* __restrict loss,
                                                const int64_t* __restrict labels,
                                                const bool* __restrict mask, int64_t n) {
  double acc[kSumLanes] = {};
  const int64_t body = n - n % kSumLanes;
  for (int64_t p0 = 0; p0 < body; p0 += kSumLanes) {
#pragma omp simd
    for (int64_t l = 0; l < kSumLanes; ++l) {
      const int64_t p = p0 + l;
      acc[l] += mask[p] && labels[p] == 0 ? static_cast<double>(loss[p]) : 0.0;
    }
  }
  for (int64_t p = body; p < n; ++p) {
    acc[p - body] += mask[p] && labels[p] == 0 ? static_cast<double>(loss[p]) : 0.0;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

SSD_FAST_CLONES double mined_negatives_sum(const float* loss, const int64_t* labels,
                                           const bool* mask, int64_t n) {
  return mined_negatives_sum_impl(loss, labels, mask, n);
}
SSD_FAST_CLONES double mined_negatives_sum(const double* loss, const int64_t* labels,
                                           const bool* mask, int64_t n) {
  return mined_negatives_sum_impl(loss, labels, mask, n);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> multibox_loss_cpu(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& loc_targets,
    const at::Tensor& labels, double neg_pos_ratio) {
  check_multibox_args(loc, conf_logits, loc_targets, labels, neg_pos_ratio);
  const int64_t B = conf_logits.size(0), P = conf_logits.size(1), C = conf_logits.size(2);
  at::Tensor mask = at::empty({B, P}, conf_logits.options().dtype(at::kBool));
  if (mask.numel() == 0) {
    return {at::zeros({}, conf_logits.options()), at::zeros({}, conf_logits.options()), mask};
  }
  const at::Tensor x = loc.contiguous(), cl = conf_logits.contiguous(), xt = loc_targets.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous();
  at::Tensor bg_ce = at::empty({B, P}, cl.options());
  double loc_sum = 0, conf_sum = 0;
  int64_t num_pos = 0;
  AT_DISPATCH_FLOATING_TYPES(cl.scalar_type(), "multibox_loss_cpu", [&] {
    const int64_t* lp = lab.data_ptr<int64_t>();
    scalar_t* bg = bg_ce.data_ptr<scalar_t>();
    int64_t bad_label = -1;
    for (const TileSums& s : tile_pass(x.data_ptr<scalar_t>(), cl.data_ptr<scalar_t>(),
                                       xt.data_ptr<scalar_t>(), lp, B * P, C, bg)) {
      loc_sum += s.loc;
      conf_sum += s.conf;
      num_pos += s.num_pos;
      bad_label = std::max(bad_label, s.bad_label);
    }
    TORCH_CHECK_VALUE(bad_label < 0, "multibox_loss: labels must be < C = ", C,
                      " (the classes of conf_logits), got ", bad_label);
    bool* mp = mask.data_ptr<bool>();
    using K = mining_key_t<scalar_t>;
    std::vector<double> neg(B, 0.0);  // per image: the mined negatives' cross-entropy
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      std::vector<K> keys(P);
      cpu::TopScratch<K> scratch;
      for (int64_t b = lo; b < hi; ++b) {
        int64_t image_pos, image_eligible;
        cpu::make_keys(bg + b * P, lp + b * P, P, keys.data(), &image_pos, &image_eligible);
        cpu::mine_image(lp + b * P, keys.data(), P, image_pos, image_eligible, neg_pos_ratio,
                        scratch, mp + b * P);
        neg[b] = mined_negatives_sum(bg + b * P, lp + b * P, mp + b * P, P);
      }
    });
    for (double s : neg) conf_sum += s;
  });
  const double n = static_cast<double>(std::max<int64_t>(num_pos, 1));
  return {at::scalar_tensor(loc_sum / n, cl.options()),
          at::scalar_tensor(conf_sum / n, cl.options()), mask};
}

// grad_loc = g_loc * clamp(loc - loc_t, -1, 1) on positives; grad_conf = g_conf * (softmax -
// onehot(label)) on masked priors; zero elsewhere. g_loc, g_conf: the output gradients / n.
template <typename T>
void backward_rows(T g_loc, T g_conf, const T* loc, const T* conf, const T* loc_t,
                   const int64_t* lab, const bool* mask, int64_t n_prior, int64_t c_n,
                   T* grad_loc, T* grad_conf) {
  at::parallel_for(0, n_prior, 16 * kTilePriors, [&](int64_t lo, int64_t hi) {
    std::vector<T> buf(c_n * kTilePriors);
    std::array<const T*, kTilePriors> rows;
    std::array<int64_t, kTilePriors> idx;
    std::array<T, kTilePriors> m, sum;
    int64_t n = 0;
    auto flush = [&] {  // the gathered masked rows: softmax, then minus the one-hot label
      cpu::load_tile(rows.data(), n, c_n, buf.data());
      cpu::softmax_tile(buf.data(), m.data(), sum.data(), c_n, n, cpu::TileExp::kNonPos);
      for (int64_t j = 0; j < n; ++j) {
        T* g = grad_conf + idx[j] * c_n;
        const int64_t label = lab[idx[j]];
        for (int64_t c = 0; c < c_n; ++c) g[c] = (buf[c * n + j] - T(c == label)) * g_conf;
      }
      n = 0;
    };
    // zeros in one run over the chunk (the masked rows are overwritten below): a memset per
    // unmasked row cost more than the rest of the backward
    std::fill(grad_conf + lo * c_n, grad_conf + hi * c_n, T(0));
    for (int64_t p = lo; p < hi; ++p) {
      for (int q = 0; q < 4; ++q) {
        grad_loc[4 * p + q] = lab[p] > 0 ? smooth_l1_grad(loc[4 * p + q] - loc_t[4 * p + q]) * g_loc : T(0);
      }
      if (!mask[p]) continue;
      rows[n] = conf + p * c_n;
      idx[n++] = p;
      if (n == kTilePriors) flush();
    }
    if (n > 0) flush();
  });
}

std::tuple<at::Tensor, at::Tensor> multibox_loss_backward_cpu(
    const at::Tensor& grad_loc_loss, const at::Tensor& grad_conf_loss, const at::Tensor& loc,
    const at::Tensor& conf_logits, const at::Tensor& loc_targets, const at::Tensor& labels,
    const at::Tensor& mask) {
  check_multibox_backward_args(grad_loc_loss, grad_conf_loss, loc, conf_logits, loc_targets,
                               labels, mask);
  at::Tensor grad_loc = at::empty(loc.sizes(), loc.options());
  at::Tensor grad_conf = at::empty(conf_logits.sizes(), conf_logits.options());
  if (mask.numel() == 0) return {grad_loc, grad_conf};
  const at::Tensor x = loc.contiguous(), cl = conf_logits.contiguous(), xt = loc_targets.contiguous();
  const at::Tensor lab = labels.to(at::kLong).contiguous(), mk = mask.contiguous();
  const int64_t n_prior = mask.numel();
  const int64_t* lp = lab.data_ptr<int64_t>();
  int64_t num_pos = 0;  // one vectorised pass: cheaper than gt + sum + item (three ATen ops)
  for (int64_t p = 0; p < n_prior; ++p) num_pos += lp[p] > 0;
  const double n = static_cast<double>(std::max<int64_t>(num_pos, 1));
  AT_DISPATCH_FLOATING_TYPES(cl.scalar_type(), "multibox_loss_backward_cpu", [&] {
    const scalar_t g_loc = static_cast<scalar_t>(grad_loc_loss.item<double>() / n);
    const scalar_t g_conf = static_cast<scalar_t>(grad_conf_loss.item<double>() / n);
    backward_rows<scalar_t>(g_loc, g_conf, x.data_ptr<scalar_t>(), cl.data_ptr<scalar_t>(),
                            xt.data_ptr<scalar_t>(), lp, mk.data_ptr<bool>(),
                            n_prior, cl.size(2), grad_loc.data_ptr<scalar_t>(),
                            grad_conf.data_ptr<scalar_t>());
  });
  return {grad_loc, grad_conf};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) {
  m.impl("multibox_loss", &multibox_loss_cpu);
  m.impl("multibox_loss_backward", &multibox_loss_backward_cpu);
}

}  // namespace ssd_fast
