// Softmax arithmetic over tiles of priors held class-major, l[c * n + j] = logit of class c,
// prior j (n <= kTilePriors), so that every per-class loop is a contiguous SIMD loop across the
// priors of the tile. Per prior this is, in this order, the arithmetic of the CUDA kernels:
// m = max over c (max_, c ascending), e_c = exp(l_c - m), sum += e_c (c ascending), with the
// exp of ops/float_math.h that the caller's CUDA kernel uses: exp_det (ssd_postprocess) or
// exp_nonpos (multibox_loss).
#pragma once

#include <cstdint>

namespace ssd_fast {
namespace cpu {

constexpr int64_t kTilePriors = 64;  // priors per tile: C * 64 values stay in L1

enum class TileExp { kDet, kNonPos };  // exp_det or exp_nonpos

// p_c = e_c / sum overwrite l; m[j] and sum[j] per prior.
void softmax_tile(float* l, float* m, float* sum, int64_t c_n, int64_t n, TileExp exp);
void softmax_tile(double* l, double* m, double* sum, int64_t c_n, int64_t n, TileExp exp);

// m[j] and log_sum[j] = log_det(sum) with exp_nonpos: logsumexp = m + log_sum. l is unchanged.
void log_sum_exp_tile(const float* l, float* m, float* log_sum, int64_t c_n, int64_t n);
void log_sum_exp_tile(const double* l, double* m, double* log_sum, int64_t c_n, int64_t n);

// buf[c * n + j] = rows[j][c] for j < n: n rows of c_n values into the class-major layout.
void load_tile(const float* const* rows, int64_t n, int64_t c_n, float* buf);
void load_tile(const double* const* rows, int64_t n, int64_t c_n, double* buf);

// The same for n consecutive rows: buf[c * n + j] = rows[j * c_n + c]. float: 16 x 16 blocks
// transposed in AVX-512 registers where the CPU has them.
void load_tile(const float* rows, int64_t n, int64_t c_n, float* buf);
void load_tile(const double* rows, int64_t n, int64_t c_n, double* buf);

}  // namespace cpu
}  // namespace ssd_fast
