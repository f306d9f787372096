// Deformable-convolution CUDA kernels, framework-free: included by the TF GPU functors
// (deform_conv_kernels.cu.cc) and usable by an nvcc-only harness. The convolution runs in chunks of
// rows: a bilinear im2col into a column buffer (one thread per (row, kernel point, channel), channels
// innermost so that reads and writes coalesce), then a shared-memory tiled GEMM per convolution group.
// Backward recomputes the columns, forms their gradient with a GEMM, accumulates the kernel gradient
// with another, and scatters through the taps (atomics), one thread per (row, group, kernel point).
#ifndef TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_CUDA_CUH_
#define TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_CUDA_CUH_

#include <cuda_runtime.h>

#include "custom_ops/deform_conv/kernels/deform_conv.h"

namespace tfdet {
namespace deform_conv {

#define TFDET_GRID_STRIDE_LOOP(i, total)                                                   \
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < (total); \
       i += static_cast<long long>(blockDim.x) * gridDim.x)

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

// Every row of out (rows x cols, row-major) set to bias, or to 0 when bias is null.
template <typename T>
__global__ void fill_rows_kernel(const T* bias, long long rows, int cols, T* out) {
  TFDET_GRID_STRIDE_LOOP(i, rows * cols) { out[i] = bias != nullptr ? bias[i % cols] : T(0); }
}

// A strided matrix: element (r, c) of group z is data[z * group + r * row + c * col].
template <typename T>
struct Strided {
  const T* data;
  long long row, col, group;
};

// C = beta * C + A x B for each group (blockIdx.z): A is M x Kd, B is Kd x N, C is row-major with
// leading dimension ldc. 16 x 16 output tiles, operands staged through shared memory.
constexpr int kTile = 16;
template <typename T>
__global__ void gemm_kernel(int M, int N, int Kd, Strided<T> a, Strided<T> b, T* c, long long ldc,
                            long long c_group, T beta) {
  __shared__ T tile_a[kTile][kTile + 1];
  __shared__ T tile_b[kTile][kTile + 1];
  const int z = blockIdx.z;
  const int row = blockIdx.y * kTile + threadIdx.y, col = blockIdx.x * kTile + threadIdx.x;
  const T* A = a.data + z * a.group;
  const T* B = b.data + z * b.group;
  T acc = T(0);
  for (int k0 = 0; k0 < Kd; k0 += kTile) {
    const int ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
    tile_a[threadIdx.y][threadIdx.x] = (row < M && ka < Kd) ? A[row * a.row + ka * a.col] : T(0);
    tile_b[threadIdx.y][threadIdx.x] = (kb < Kd && col < N) ? B[kb * b.row + col * b.col] : T(0);
    __syncthreads();
    for (int t = 0; t < kTile; ++t) acc += tile_a[threadIdx.y][t] * tile_b[t][threadIdx.x];
    __syncthreads();
  }
  if (row < M && col < N) {
    T* dst = c + z * c_group + row * ldc + col;
    *dst = beta == T(0) ? acc : beta * *dst + acc;
  }
}

inline int launch_blocks(long long total, int threads) {
  const long long blocks = (total + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

template <typename T>
cudaError_t launch_gemm(int groups, int M, int N, int Kd, Strided<T> a, Strided<T> b, T* c, long long ldc,
                        long long c_group, T beta, cudaStream_t stream) {
  if (M == 0 || N == 0 || groups == 0) return cudaSuccess;
  const dim3 threads(kTile, kTile);
  const dim3 blocks((N + kTile - 1) / kTile, (M + kTile - 1) / kTile, groups);
  gemm_kernel<T><<<blocks, threads, 0, stream>>>(M, N, Kd, a, b, c, ldc, c_group, beta);
  return cudaGetLastError();
}

// Rows per chunk so that one column buffer holds at most max_elements values.
inline long long chunk_rows(const Shape& s, long long max_elements) {
  const long long rows = max_elements / (s.row_length() > 0 ? s.row_length() : 1);
  return rows < 1 ? 1 : (rows < s.rows() ? rows : s.rows());
}

// Forward over rows [p0, p0 + count), using `cols` (count x row_length) as scratch.
template <typename T>
cudaError_t launch_forward_chunk(const Shape& s, const T* inputs, const T* offsets, const T* mask, const T* kernel,
                                 const T* bias, long long p0, long long count, T* cols, T* output,
                                 cudaStream_t stream) {
  const int threads = 256, L = s.row_length(), cout = s.out_channels, cout_g = cout / s.groups;
  const int kcg = s.taps() * s.group_channels();
  if (count * L > 0) {
    im2col_kernel<T><<<launch_blocks(count * L, threads), threads, 0, stream>>>(s, inputs, offsets, mask, p0, count,
                                                                               cols);
  }
  T* out = output + p0 * cout;
  fill_rows_kernel<T><<<launch_blocks(count * cout, threads), threads, 0, stream>>>(bias, count, cout, out);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  return launch_gemm<T>(s.groups, static_cast<int>(count), cout_g, kcg, Strided<T>{cols, L, 1, kcg},
                        Strided<T>{kernel, cout, 1, cout_g}, out, cout, cout_g, T(1), stream);
}

// Backward over rows [p0, p0 + count); grad_inputs and grad_kernel must be zeroed before the first
// chunk. `cols` and `grad_cols` are count x row_length scratch buffers.
template <typename T>
cudaError_t launch_backward_chunk(const Shape& s, const T* inputs, const T* offsets, const T* mask, const T* kernel,
                                  const T* grad_output, long long p0, long long count, T* cols, T* grad_cols,
                                  T* grad_inputs, T* grad_offsets, T* grad_mask, T* grad_kernel,
                                  cudaStream_t stream) {
  const int threads = 256, L = s.row_length(), cout = s.out_channels, cout_g = cout / s.groups;
  const int kcg = s.taps() * s.group_channels(), dgk = s.deformable_groups * s.taps();
  if (count * L > 0) {
    im2col_kernel<T><<<launch_blocks(count * L, threads), threads, 0, stream>>>(s, inputs, offsets, mask, p0, count,
                                                                               cols);
  }
  const T* go = grad_output + p0 * cout;
  // grad_cols (count x kcg per group) = grad_output_g (count x cout_g) x kernel_g^T (cout_g x kcg).
  cudaError_t err = launch_gemm<T>(s.groups, static_cast<int>(count), kcg, cout_g, Strided<T>{go, cout, 1, cout_g},
                                   Strided<T>{kernel, 1, cout, cout_g}, grad_cols, L, kcg, T(0), stream);
  if (err != cudaSuccess) return err;
  // grad_kernel_g (kcg x cout_g) += cols_g^T (kcg x count) x grad_output_g (count x cout_g).
  err = launch_gemm<T>(s.groups, kcg, cout_g, static_cast<int>(count), Strided<T>{cols, 1, L, kcg},
                       Strided<T>{go, cout, 1, cout_g}, grad_kernel, cout, cout_g, T(1), stream);
  if (err != cudaSuccess) return err;
  col2im_kernel<T><<<launch_blocks(count * dgk, threads), threads, 0, stream>>>(
      s, inputs, offsets, mask, grad_cols, p0, count, grad_inputs, grad_offsets, grad_mask);
  return cudaGetLastError();
}

#undef TFDET_GRID_STRIDE_LOOP

}  // namespace deform_conv
}  // namespace tfdet

#endif  // TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_CUDA_CUH_
