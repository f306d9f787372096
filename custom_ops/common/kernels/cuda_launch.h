// 1-D launch helpers of the CUDA kernels, framework-free (nvcc only): shared by every op's
// kernels/<op>_cuda.cuh, so the nvcc-only harness in tests/gpu/ builds them without TensorFlow.
#ifndef TFDET_COMMON_KERNELS_CUDA_LAUNCH_H_
#define TFDET_COMMON_KERNELS_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

// for (i = this thread's first index; i < total; i += the number of threads in the grid)
#define TFDET_GRID_STRIDE_LOOP(i, total)                                                          \
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < (total); \
       i += static_cast<long long>(blockDim.x) * gridDim.x)

namespace tfdet {

// Blocks of `threads` threads covering `total` elements, at least 1 and at most 65535 * 8 (the
// grid-stride loop covers the rest).
inline int launch_blocks(long long total, int threads) {
  const long long blocks = (total + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace tfdet

#endif  // TFDET_COMMON_KERNELS_CUDA_LAUNCH_H_
