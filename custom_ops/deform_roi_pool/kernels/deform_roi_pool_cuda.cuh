// Deformable RoI pooling CUDA kernels, framework-free: included by the TF GPU functors
// (deform_roi_pool_kernels.cu.cc) and usable by an nvcc-only harness. Forward and the features'
// gradient run one thread per output element (k, ph, pw, c) as RoIAlign does; the offsets' gradient
// runs one thread per bin, summing over the channels.
#ifndef TFDET_DEFORM_ROI_POOL_KERNELS_DEFORM_ROI_POOL_CUDA_CUH_
#define TFDET_DEFORM_ROI_POOL_KERNELS_DEFORM_ROI_POOL_CUDA_CUH_

#include <cuda_runtime.h>

#include "custom_ops/common/kernels/cuda_launch.h"
#include "custom_ops/deform_roi_pool/kernels/deform_roi_pool.h"

namespace tfdet {
namespace deform_roi_pool {

template <typename T>
__global__ void forward_kernel(Shape s, T gamma, const T* features, const T* boxes, const int* box_indices,
                               const T* offsets, T* output) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int c = static_cast<int>(i % s.channels);
    const long long bin = i / s.channels;
    const Bin b = unflatten_bin(bin, s);
    const int pw = b.pw, ph = b.ph, k = b.k;
    const int n = box_indices[k];
    T* out = output + bin * s.channels;
    if (n < 0 || n >= s.batch) {  // validated before the launch; never read out of bounds here
      out[c] = T(0);
      continue;
    }
    const RoiGrid<T> g = bin_grid(boxes + 4 * k, offsets == nullptr ? nullptr : offsets + 2 * bin, gamma, s);
    roi_align::forward_bin(features + static_cast<long long>(n) * s.height * s.width * s.channels, g, ph, pw, s, c,
                           c + 1, out);
  }
}

template <typename T>
__global__ void backward_features_kernel(Shape s, T gamma, const T* grad_output, const T* boxes,
                                         const int* box_indices, const T* offsets, T* grad_features) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  TFDET_GRID_STRIDE_LOOP(i, total) {
    const int c = static_cast<int>(i % s.channels);
    const long long bin = i / s.channels;
    const Bin b = unflatten_bin(bin, s);
    const int pw = b.pw, ph = b.ph, k = b.k;
    const int n = box_indices[k];
    if (n < 0 || n >= s.batch) continue;
    const RoiGrid<T> g = bin_grid(boxes + 4 * k, offsets == nullptr ? nullptr : offsets + 2 * bin, gamma, s);
    roi_align::backward_bin(grad_output + bin * s.channels, g, ph, pw, s, c, c + 1,
                            grad_features + static_cast<long long>(n) * s.height * s.width * s.channels);
  }
}

template <typename T>
__global__ void backward_offsets_kernel(Shape s, T gamma, const T* grad_output, const T* features, const T* boxes,
                                        const int* box_indices, const T* offsets, T* grad_offsets) {
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  TFDET_GRID_STRIDE_LOOP(bin, bins) {
    const Bin b = unflatten_bin(bin, s);
    const int pw = b.pw, ph = b.ph, k = b.k;
    const int n = box_indices[k];
    if (n < 0 || n >= s.batch) {
      grad_offsets[2 * bin] = grad_offsets[2 * bin + 1] = T(0);
      continue;
    }
    const RoiGrid<T> g = bin_grid(boxes + 4 * k, offsets + 2 * bin, gamma, s);
    offset_grad_bin(features + static_cast<long long>(n) * s.height * s.width * s.channels, g, ph, pw, gamma, s, 0,
                    s.channels, grad_output + bin * s.channels, grad_offsets + 2 * bin);
  }
}

// Launchers: return the launch status (cudaSuccess when the kernels were queued).
template <typename T>
cudaError_t launch_forward(const Shape& s, T gamma, const T* features, const T* boxes, const int* box_indices,
                           const T* offsets, T* output, cudaStream_t stream) {
  const long long total = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  if (total == 0) return cudaSuccess;
  forward_kernel<T><<<launch_blocks(total, 256), 256, 0, stream>>>(s, gamma, features, boxes, box_indices, offsets,
                                                                   output);
  return cudaGetLastError();
}

// grad_features must be zeroed by the caller (on the same stream); grad_offsets is written whole.
template <typename T>
cudaError_t launch_backward(const Shape& s, T gamma, const T* grad_output, const T* features, const T* boxes,
                            const int* box_indices, const T* offsets, T* grad_features, T* grad_offsets,
                            cudaStream_t stream) {
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  if (bins * s.channels > 0) {
    backward_features_kernel<T><<<launch_blocks(bins * s.channels, 256), 256, 0, stream>>>(
        s, gamma, grad_output, boxes, box_indices, offsets, grad_features);
  }
  if (offsets != nullptr && bins > 0) {
    backward_offsets_kernel<T><<<launch_blocks(bins, 128), 128, 0, stream>>>(s, gamma, grad_output, features, boxes,
                                                                             box_indices, offsets, grad_offsets);
  }
  return cudaGetLastError();
}

}  // namespace deform_roi_pool
}  // namespace tfdet

#endif  // TFDET_DEFORM_ROI_POOL_KERNELS_DEFORM_ROI_POOL_CUDA_CUH_
