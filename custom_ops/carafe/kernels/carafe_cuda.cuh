// CARAFE CUDA kernels, framework-free: included by the TF GPU kernel (carafe_kernels.cu.cc) and usable
// by an nvcc-only harness. One thread per output element; channels are innermost (NHWC), so
// neighbouring threads read neighbouring addresses. Every gradient element is a gather owned by one
// thread: no atomics, deterministic results.
#ifndef TFDET_CARAFE_KERNELS_CARAFE_CUDA_CUH_
#define TFDET_CARAFE_KERNELS_CARAFE_CUDA_CUH_

#include <cuda_runtime.h>

#include "custom_ops/carafe/kernels/carafe.h"
#include "custom_ops/common/kernels/cuda_launch.h"

namespace tfdet {
namespace carafe {

// output[n, y, x, c], i = ((n * Ho + y) * Wo + x) * C + c.
template <typename T>
__global__ void forward_kernel(const T* features, const T* masks, Shape s, T* output) {
  const long long total = static_cast<long long>(s.batch) * s.out_height() * s.out_width() * s.channels;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int c = static_cast<int>(i % s.channels);
    const long long p = i / s.channels;
    const int x = static_cast<int>(p % s.out_width());
    const int y = static_cast<int>((p / s.out_width()) % s.out_height());
    const int n = static_cast<int>(p / (static_cast<long long>(s.out_width()) * s.out_height()));
    forward_pixel<1>(features, masks, s, n, y, x, c, c + 1, output + p * s.channels);
  }
}

// grad_features[n, iy, ix, c], i = ((n * H + iy) * W + ix) * C + c.
template <typename T>
__global__ void backward_features_kernel(const T* grad_output, const T* masks, Shape s, T* grad_features) {
  const long long total = static_cast<long long>(s.batch) * s.height * s.width * s.channels;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int c = static_cast<int>(i % s.channels);
    const long long p = i / s.channels;
    const int ix = static_cast<int>(p % s.width);
    const int iy = static_cast<int>((p / s.width) % s.height);
    const int n = static_cast<int>(p / (static_cast<long long>(s.width) * s.height));
    backward_features_pixel<1>(grad_output, masks, s, n, iy, ix, c, c + 1, grad_features + p * s.channels);
  }
}

// grad_masks[n, y, x, m], i = ((n * Ho + y) * Wo + x) * G*k*k + m.
template <typename T>
__global__ void backward_masks_kernel(const T* grad_output, const T* features, Shape s, T* grad_masks) {
  const int mc = s.mask_channels();
  const long long total = static_cast<long long>(s.batch) * s.out_height() * s.out_width() * mc;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int m = static_cast<int>(i % mc);
    const long long p = i / mc;
    const int x = static_cast<int>(p % s.out_width());
    const int y = static_cast<int>((p / s.out_width()) % s.out_height());
    const int n = static_cast<int>(p / (static_cast<long long>(s.out_width()) * s.out_height()));
    grad_masks[i] = backward_mask_value<1>(grad_output, features, s, n, y, x, m);
  }
}

// Launchers: return the launch status (cudaSuccess when the kernels were queued). Shapes must be valid.
template <typename T>
cudaError_t launch_forward(const T* features, const T* masks, const Shape& s, T* output, cudaStream_t stream) {
  const long long total = static_cast<long long>(s.batch) * s.out_height() * s.out_width() * s.channels;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  forward_kernel<T><<<launch_blocks(total, threads), threads, 0, stream>>>(features, masks, s, output);
  return cudaGetLastError();
}

// Writes all of grad_features and grad_masks (no zeroing needed).
template <typename T>
cudaError_t launch_backward(const T* grad_output, const T* features, const T* masks, const Shape& s,
                            T* grad_features, T* grad_masks, cudaStream_t stream) {
  const int threads = 256;
  const long long features_total = static_cast<long long>(s.batch) * s.height * s.width * s.channels;
  if (features_total > 0) {
    backward_features_kernel<T><<<launch_blocks(features_total, threads), threads, 0, stream>>>(
        grad_output, masks, s, grad_features);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const long long masks_total = static_cast<long long>(s.batch) * s.out_height() * s.out_width() * s.mask_channels();
  if (masks_total > 0) {
    backward_masks_kernel<T><<<launch_blocks(masks_total, threads), threads, 0, stream>>>(grad_output, features, s,
                                                                                          grad_masks);
  }
  return cudaGetLastError();
}

}  // namespace carafe
}  // namespace tfdet

#endif  // TFDET_CARAFE_KERNELS_CARAFE_CUDA_CUH_
