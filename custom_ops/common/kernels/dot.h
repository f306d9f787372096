// Dot product with independent partial sums, framework-free and shared by the CPU and CUDA kernels.
#ifndef TFDET_COMMON_KERNELS_DOT_H_
#define TFDET_COMMON_KERNELS_DOT_H_

#include "custom_ops/common/kernels/platform.h"

// Forced inline on the host too: CPU kernels compiled once per instruction set (function
// multiversioning) only vectorize for the clone's ISA what is inlined into them.
#if defined(__CUDACC__)
#define TFDET_FORCE_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define TFDET_FORCE_INLINE inline __attribute__((always_inline))
#else
#define TFDET_FORCE_INLINE inline
#endif

namespace tfdet {

// sum_{c < len} a[c] * b[c] with kLanes partial sums: independent chains that the host compiler turns
// into vector accumulators (one running sum would be a serial chain: float addition is not
// reassociated). kLanes = 1 is the plain loop, for one-thread-per-value CUDA kernels.
template <int kLanes, typename T>
TFDET_FORCE_INLINE T dot(const T* a, const T* b, int len) {
  T acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = T(0);
  int c = 0;
  for (; c + kLanes <= len; c += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += a[c + j] * b[c + j];
  }
  for (; c < len; ++c) acc[0] += a[c] * b[c];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

}  // namespace tfdet

#endif  // TFDET_COMMON_KERNELS_DOT_H_
