// Function multiversioning of the CPU loops: the extension is built for baseline x86-64, so
// the hot SIMD loops are compiled again for x86-64-v3 (AVX2 + FMA; Haswell, Zen) and some for
// x86-64-v4 (AVX-512), and the loader picks one at load time. The clones round identically:
// no multiply-add is contracted, and the explicit fma_ (ops/float_math.h) is one rounding in
// every clone (an instruction in v3/v4, libm's fmaf in the baseline one).
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 12
#define SSD_FAST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
// For loops bound by vector arithmetic (the exp of softmaxes), which AVX-512 halves.
#define SSD_FAST_CLONES_AVX512 \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
// Older gcc: the ISA-level names may be refused; AVX2 / AVX-512F clones without FMA (fma_ is
// then a libm call in every clone: the same bits, slower).
#define SSD_FAST_CLONES __attribute__((target_clones("avx2", "default")))
#define SSD_FAST_CLONES_AVX512 __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SSD_FAST_CLONES
#define SSD_FAST_CLONES_AVX512
#endif
// Inlined into each target_clones copy, so that its loops are compiled for that target.
#define SSD_FAST_INLINE inline __attribute__((always_inline))
