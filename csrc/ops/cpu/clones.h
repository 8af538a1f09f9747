// Function multiversioning of the CPU loops: the extension is built without -mavx2, so the
// hot SIMD loops are compiled twice (AVX2 and baseline) and the loader picks one at load time.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SSD_FAST_CLONES __attribute__((target_clones("avx2", "default")))
// For loops bound by vector arithmetic (the exp of softmaxes), which AVX-512 halves.
#define SSD_FAST_CLONES_AVX512 __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SSD_FAST_CLONES
#define SSD_FAST_CLONES_AVX512
#endif
// Inlined into each target_clones copy, so that its loops are compiled for that target.
#define SSD_FAST_INLINE inline __attribute__((always_inline))
