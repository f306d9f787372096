// Deformable-convolution CUDA kernels, framework-free: included by the TF GPU functors
// (deform_conv_kernels.cu.cc) and usable by an nvcc-only harness. im2col runs one thread per (row,
// kernel point, channel), channels innermost so that reads and writes coalesce; col2im runs one thread
// per (row, deformable group, kernel point), scattering into the inputs' gradient with atomics and
// writing the offsets' and mask's gradients of its sample. The GEMMs are cuBLAS's, through tf.matmul.
#ifndef TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_CUDA_CUH_
#define TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_CUDA_CUH_

#include <cuda_runtime.h>

#include "custom_ops/common/kernels/cuda_launch.h"
#include "custom_ops/deform_conv/kernels/deform_conv.h"

namespace tfdet {
namespace deform_conv {

// Columns of rows [p0, p0 + count) into cols (count x row_length).
template <typename T>
__global__ void im2col_kernel(Shape s, const T* inputs, const T* offsets, const T* mask, long long p0,
                              long long count, T* cols) {
  const int C = s.in_channels, K = s.taps();
  const long long image_size = static_cast<long long>(s.height) * s.width * C;
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  TFDET_GRID_STRIDE_LOOP(i, count * K * C) {
    const int c = static_cast<int>(i % C);
    const int k = static_cast<int>((i / C) % K);
    const long long p = p0 + i / (static_cast<long long>(C) * K);
    im2col_point(s, inputs + (p / plane) * image_size, offsets, mask, p, c / s.deform_channels(), k, c, c + 1,
                 cols + (p - p0) * s.row_length());
  }
}

// Scatters the columns' gradient of rows [p0, p0 + count) into grad_inputs (atomically) and writes
// the offsets' and mask's gradients of those rows.
template <typename T>
__global__ void col2im_kernel(Shape s, const T* inputs, const T* offsets, const T* mask, const T* grad_cols,
                              long long p0, long long count, T* grad_inputs, T* grad_offsets, T* grad_mask) {
  const int K = s.taps(), dgk = s.deformable_groups * K, cd = s.deform_channels();
  const long long image_size = static_cast<long long>(s.height) * s.width * s.in_channels;
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  TFDET_GRID_STRIDE_LOOP(i, count * dgk) {
    const int k = static_cast<int>(i % K);
    const int g = static_cast<int>((i / K) % s.deformable_groups);
    const long long p = p0 + i / dgk;
    const long long n = p / plane;
    const PointGrad<T> pg = col2im_point(s, inputs + n * image_size, offsets, mask, p, g, k, g * cd, (g + 1) * cd,
                                         grad_cols + (p - p0) * s.row_length(), grad_inputs + n * image_size);
    grad_offsets[p * 2 * dgk + 2 * (g * K + k)] = pg.y;
    grad_offsets[p * 2 * dgk + 2 * (g * K + k) + 1] = pg.x;
    if (s.modulated) grad_mask[p * dgk + g * K + k] = pg.mask;
  }
}

// Launchers: return the launch status (cudaSuccess when the kernel was queued).
template <typename T>
cudaError_t launch_im2col(const Shape& s, const T* inputs, const T* offsets, const T* mask, T* columns,
                          cudaStream_t stream) {
  const long long total = s.rows() * s.row_length();
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  im2col_kernel<T><<<launch_blocks(total, threads), threads, 0, stream>>>(s, inputs, offsets, mask, 0, s.rows(),
                                                                         columns);
  return cudaGetLastError();
}

// grad_inputs must be zeroed by the caller (on the same stream).
template <typename T>
cudaError_t launch_col2im(const Shape& s, const T* inputs, const T* offsets, const T* mask, const T* grad_columns,
                          T* grad_inputs, T* grad_offsets, T* grad_mask, cudaStream_t stream) {
  const long long total = s.rows() * s.deformable_groups * s.taps();
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  col2im_kernel<T><<<launch_blocks(total, threads), threads, 0, stream>>>(
      s, inputs, offsets, mask, grad_columns, 0, s.rows(), grad_inputs, grad_offsets, grad_mask);
  return cudaGetLastError();
}

}  // namespace deform_conv
}  // namespace tfdet

#endif  // TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_CUDA_CUH_
