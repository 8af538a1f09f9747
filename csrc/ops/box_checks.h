// Argument checks and shape planning of the box ops: the one home of their checks and messages.
// The CPU and CUDA kernels run them on real tensors, the meta functions of ops/meta.cpp on the
// metadata of fake and meta tensors (whose sizes may be symbolic: the checks read sym_sizes()).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/irange.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
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
  TORCH_CHECK(t.dim() >= min_dim && t.sym_size(-1) == 4, op, ": ", name, " must have shape ",
              layout, ", got ", t.sym_sizes());
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

// A number as error messages show it: the shortest of 15 or 17 significant digits that reads
// back exactly (so 0.1 shows as 0.1, 1.0000001 as 1.0000001): a value just out of range never
// prints as the bound it exceeds.
inline std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.15g", x);
  if (std::isfinite(x) && std::strtod(buf, nullptr) != x) std::snprintf(buf, sizeof(buf), "%.17g", x);
  return buf;
}

inline std::string format_doubles(at::ArrayRef<double> v) {
  std::string s = "[";
  for (const auto i : c10::irange(v.size())) s += (i ? ", " : "") + format_number(v[i]);
  return s + "]";
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

// box_iou's checks; returns its output shape [..., N, M].
inline c10::SymDimVector check_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  constexpr const char* op = "box_iou";
  check_boxes(op, "boxes1", boxes1, 2, "[..., N, 4]");
  check_boxes(op, "boxes2", boxes2, 2, "[..., M, 4]");
  check_same_device_dtype(op, "boxes1", boxes1, "boxes2", boxes2);
  auto lead1 = boxes1.sym_sizes().slice(0, boxes1.dim() - 2);
  auto lead2 = boxes2.sym_sizes().slice(0, boxes2.dim() - 2);
  TORCH_CHECK(lead1.empty() || lead2.empty() || lead1 == lead2, op,
              ": boxes1 and boxes2 must have the same leading (batch) dims, or one of them none, "
              "got boxes1 ", boxes1.sym_sizes(), " and boxes2 ", boxes2.sym_sizes());
  const auto lead = lead1.empty() ? lead2 : lead1;
  c10::SymDimVector out(lead.begin(), lead.end());
  out.push_back(boxes1.sym_size(-2));
  out.push_back(boxes2.sym_size(-2));
  return out;
}

inline IouPlan plan_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  IouPlan p;
  p.out_sizes = C10_AS_INTARRAYREF_SLOW(check_box_iou(boxes1, boxes2)).vec();
  p.boxes1 = boxes1.contiguous();
  p.boxes2 = boxes2.contiguous();
  p.n = boxes1.size(-2);
  p.m = boxes2.size(-2);
  p.batched1 = boxes1.dim() > 2;
  p.batched2 = boxes2.dim() > 2;
  p.batch = c10::multiply_integers(p.out_sizes.begin(), p.out_sizes.end() - 2);
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

// encode_boxes / decode_boxes's checks; returns the output shape [..., 4].
inline c10::SymDimVector check_coder(const char* op, const char* a_name, const at::Tensor& a,
                                     const at::Tensor& priors, at::ArrayRef<double> variances) {
  check_boxes(op, a_name, a, 1, "[..., 4]");
  check_boxes(op, "priors", priors, 1, "[..., 4]");
  check_same_device_dtype(op, a_name, a, "priors", priors);
  check_variances(op, variances);
  auto la = a.sym_sizes().slice(0, a.dim() - 1);
  auto lp = priors.sym_sizes().slice(0, priors.dim() - 1);
  c10::SymDimVector out;
  bool ok = true;
  const size_t n = std::max(la.size(), lp.size());
  for (size_t i = 0; i < n; ++i) {  // numpy broadcasting, aligned on the right
    c10::SymInt x = i < n - la.size() ? c10::SymInt(1) : la[i - (n - la.size())];
    c10::SymInt y = i < n - lp.size() ? c10::SymInt(1) : lp[i - (n - lp.size())];
    ok = ok && (x == y || x == 1 || y == 1);
    out.push_back(x == 1 ? y : x);
  }
  TORCH_CHECK(ok, op, ": the leading dims of ", a_name, " ", a.sym_sizes(), " and priors ",
              priors.sym_sizes(), " do not broadcast");
  out.push_back(4);
  return out;
}

inline CoderPlan plan_coder(const char* op, const char* a_name, const at::Tensor& a,
                            const at::Tensor& priors, at::ArrayRef<double> variances) {
  CoderPlan p;
  p.out_sizes = C10_AS_INTARRAYREF_SLOW(check_coder(op, a_name, a, priors, variances)).vec();
  const at::IntArrayRef lead(p.out_sizes.data(), p.out_sizes.size() - 1);
  p.a = periodic_rows(a, lead, &p.a_rows);
  p.priors = periodic_rows(priors, lead, &p.p_rows);
  p.rows = c10::multiply_integers(lead);
  return p;
}

}  // namespace ssd_fast
