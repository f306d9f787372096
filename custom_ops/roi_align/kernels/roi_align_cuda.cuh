// RoIAlign CUDA kernels, framework-free: included by the TF GPU kernel (roi_align_kernels.cu.cc) and
// by the nvcc-only harness in tests/gpu/. One thread per output element (k, ph, pw, c); channels are
// innermost (NHWC), so neighbouring threads read neighbouring addresses.
#ifndef TFDET_ROI_ALIGN_KERNELS_ROI_ALIGN_CUDA_CUH_
#define TFDET_ROI_ALIGN_KERNELS_ROI_ALIGN_CUDA_CUH_

#include <cuda_runtime.h>

#include "custom_ops/common/kernels/cuda_launch.h"
#include "custom_ops/roi_align/kernels/roi_align.h"

namespace tfdet {
namespace roi_align {

template <typename T>
__global__ void forward_kernel(const T* features, const T* boxes, const int* box_indices, Shape s, T* output) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int c = static_cast<int>(i % s.channels);
    const long long bin = i / s.channels;
    const Bin b = unflatten_bin(bin, s);
    const int n = box_indices[b.k];
    T* out = output + bin * s.channels;
    if (n < 0 || n >= s.batch) {  // validated before the launch; never read out of bounds here
      out[c] = T(0);
      continue;
    }
    const RoiGrid<T> g = make_grid(boxes + 4 * b.k, s);
    const T* image = features + static_cast<long long>(n) * s.height * s.width * s.channels;
    forward_bin(image, g, b.ph, b.pw, s, c, c + 1, out);
  }
}

template <typename T>
__global__ void backward_kernel(const T* grad_output, const T* boxes, const int* box_indices, Shape s,
                                T* grad_features) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int c = static_cast<int>(i % s.channels);
    const long long bin = i / s.channels;
    const Bin b = unflatten_bin(bin, s);
    const int n = box_indices[b.k];
    if (n < 0 || n >= s.batch) continue;
    const RoiGrid<T> g = make_grid(boxes + 4 * b.k, s);
    T* grad_image = grad_features + static_cast<long long>(n) * s.height * s.width * s.channels;
    backward_bin(grad_output + bin * s.channels, g, b.ph, b.pw, s, c, c + 1, grad_image);
  }
}

// Launchers: return the launch status (cudaSuccess when the kernel was queued).
template <typename T>
cudaError_t launch_forward(const T* features, const T* boxes, const int* box_indices, const Shape& s,
                           T* output, cudaStream_t stream) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  forward_kernel<T><<<launch_blocks(total, threads), threads, 0, stream>>>(features, boxes, box_indices, s, output);
  return cudaGetLastError();
}

// grad_features must be zeroed by the caller (on the same stream).
template <typename T>
cudaError_t launch_backward(const T* grad_output, const T* boxes, const int* box_indices, const Shape& s,
                            T* grad_features, cudaStream_t stream) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  backward_kernel<T><<<launch_blocks(total, threads), threads, 0, stream>>>(grad_output, boxes, box_indices, s,
                                                                            grad_features);
  return cudaGetLastError();
}

}  // namespace roi_align
}  // namespace tfdet

#endif  // TFDET_ROI_ALIGN_KERNELS_ROI_ALIGN_CUDA_CUH_
