// Argument checks and shape planning shared by the CPU and CUDA kernels of the box ops.
// ssd_fast/ops/_fake.py raises the very same messages for the fake (meta) kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/irange.h>

#include <sstream>
#include <string>
#include <vector>

namespace ssd_fast {

inline std::string dtype_name(at::ScalarType t) { return std::string(c10::getDtypeNames(t).first); }

inline void check_float(const char* op, const char* name, const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
              op, ": ", name, " must be float16, bfloat16, float32 or float64, got ",
              dtype_name(st));
}

inline void check_boxes(const char* op, const char* name, const at::Tensor& t, int64_t min_dim,
                        const char* layout) {
  check_float(op, name, t);
  TORCH_CHECK(t.dim() >= min_dim && t.size(-1) == 4, op, ": ", name, " must have shape ", layout,
              ", got ", t.sizes());
}

inline void check_same_device(const char* op, const char* name_a, const at::Tensor& a,
                              const char* name_b, const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_same_device_dtype(const char* op, const char* name_a, const at::Tensor& a,
                                    const char* name_b, const at::Tensor& b) {
  check_same_device(op, name_a, a, name_b, b);
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
              " must have the same dtype, got ", dtype_name(a.scalar_type()), " and ",
              dtype_name(b.scalar_type()));
}

inline std::string format_doubles(at::ArrayRef<double> v) {
  std::ostringstream s;
  s << "[";
  for (const auto i : c10::irange(v.size())) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

inline void check_variances(const char* op, at::ArrayRef<double> v) {
  bool ok = v.size() == 4;
  for (double x : v) ok = ok && std::isfinite(x) && x > 0;
  TORCH_CHECK_VALUE(ok, op, ": variances must be 4 positive finite numbers, got ",
                    format_doubles(v));
}

// box_iou: boxes1 [..., N, 4], boxes2 [..., M, 4]. Leading dims are equal, or one side has
// none and is shared by every batch of the other.
struct IouPlan {
  at::Tensor boxes1, boxes2;  // contiguous
  int64_t batch, n, m;
  bool batched1, batched2;    // false: the same boxes for every batch
  std::vector<int64_t> out_sizes;
};

inline IouPlan plan_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  constexpr const char* op = "box_iou";
  check_boxes(op, "boxes1", boxes1, 2, "[..., N, 4]");
  check_boxes(op, "boxes2", boxes2, 2, "[..., M, 4]");
  check_same_device_dtype(op, "boxes1", boxes1, "boxes2", boxes2);
  auto lead1 = boxes1.sizes().slice(0, boxes1.dim() - 2);
  auto lead2 = boxes2.sizes().slice(0, boxes2.dim() - 2);
  TORCH_CHECK(lead1.empty() || lead2.empty() || lead1 == lead2, op,
              ": boxes1 and boxes2 must have the same leading (batch) dims, or one of them none, "
              "got boxes1 ", boxes1.sizes(), " and boxes2 ", boxes2.sizes());
  IouPlan p;
  p.boxes1 = boxes1.contiguous();
  p.boxes2 = boxes2.contiguous();
  p.n = boxes1.size(-2);
  p.m = boxes2.size(-2);
  p.batched1 = !lead1.empty();
  p.batched2 = !lead2.empty();
  auto lead = lead1.empty() ? lead2 : lead1;
  p.batch = c10::multiply_integers(lead);
  p.out_sizes = lead.vec();
  p.out_sizes.push_back(p.n);
  p.out_sizes.push_back(p.m);
  return p;
}

// encode_boxes / decode_boxes: a [..., 4] and priors [..., 4] broadcast against each other.
// Each input is kept as `rows` contiguous boxes that repeat with that period over the output
// rows (priors [P, 4] against gt [B, P, 4]: period P, no copy); other broadcasts are expanded.
struct CoderPlan {
  at::Tensor a, priors;  // contiguous
  int64_t a_rows, p_rows, rows;
  std::vector<int64_t> out_sizes;
};

inline at::Tensor periodic_rows(const at::Tensor& t, at::IntArrayRef out_lead, int64_t* period) {
  auto lead = t.sizes().slice(0, t.dim() - 1);
  size_t first = 0;
  while (first < lead.size() && lead[first] == 1) ++first;
  auto core = lead.slice(first);
  bool suffix = core.size() <= out_lead.size() &&
                core == out_lead.slice(out_lead.size() - core.size());
  if (suffix) {
    *period = c10::multiply_integers(core);
    return t.contiguous();
  }
  std::vector<int64_t> full(out_lead.begin(), out_lead.end());
  full.push_back(4);
  *period = c10::multiply_integers(out_lead);
  return t.expand(full).contiguous();
}

inline CoderPlan plan_coder(const char* op, const char* a_name, const at::Tensor& a,
                            const at::Tensor& priors, at::ArrayRef<double> variances) {
  check_boxes(op, a_name, a, 1, "[..., 4]");
  check_boxes(op, "priors", priors, 1, "[..., 4]");
  check_same_device_dtype(op, a_name, a, "priors", priors);
  check_variances(op, variances);
  auto la = a.sizes().slice(0, a.dim() - 1);
  auto lp = priors.sizes().slice(0, priors.dim() - 1);
  std::vector<int64_t> lead;
  bool ok = true;
  const size_t n = std::max(la.size(), lp.size());
  for (size_t i = 0; i < n; ++i) {  // numpy broadcasting, aligned on the right
    int64_t x = i < n - la.size() ? 1 : la[i - (n - la.size())];
    int64_t y = i < n - lp.size() ? 1 : lp[i - (n - lp.size())];
    ok = ok && (x == y || x == 1 || y == 1);
    lead.push_back(x == 1 ? y : x);
  }
  TORCH_CHECK(ok, op, ": the leading dims of ", a_name, " ", a.sizes(), " and priors ",
              priors.sizes(), " do not broadcast");
  CoderPlan p;
  p.a = periodic_rows(a, lead, &p.a_rows);
  p.priors = periodic_rows(priors, lead, &p.p_rows);
  p.rows = c10::multiply_integers(lead);
  p.out_sizes = lead;
  p.out_sizes.push_back(4);
  return p;
}

}  // namespace ssd_fast
