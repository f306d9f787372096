// Deformable-convolution GPU functors: launch the framework-free kernels of
// kernels/deform_conv_cuda.cuh on TF's stream, in chunks of rows whose column buffers come from TF's
// allocator.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "custom_ops/deform_conv/deform_conv_kernels.h"
#include "custom_ops/deform_conv/kernels/deform_conv_cuda.cuh"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfdet {
namespace deform_conv {

namespace tf = ::tensorflow;
using GPUDevice = Eigen::GpuDevice;

constexpr long long kMaxColumnElements = 1LL << 26;  // 256 MiB of float columns per buffer

inline bool check(tf::OpKernelContext* ctx, cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    ctx->SetStatus(tf::errors::Internal("deform_conv2d: ", what, " failed: ", cudaGetErrorString(err)));
  }
  return err == cudaSuccess;
}

template <typename T>
bool allocate_columns(tf::OpKernelContext* ctx, long long elements, tf::Tensor* t) {
  const tf::Status status =
      ctx->allocate_temp(tf::DataTypeToEnum<T>::value, tf::TensorShape({std::max(elements, 1LL)}), t);
  ctx->SetStatus(status);
  return status.ok();
}

template <typename T>
void Forward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs,
                                       const T* offsets, const T* mask, const T* kernel, const T* bias,
                                       T* output) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  const long long chunk = chunk_rows(s, kMaxColumnElements);
  tf::Tensor cols;
  if (!allocate_columns<T>(ctx, chunk * s.row_length(), &cols)) return;
  for (long long p0 = 0; p0 < s.rows(); p0 += chunk) {
    const long long count = std::min(chunk, s.rows() - p0);
    if (!check(ctx, launch_forward_chunk(s, inputs, offsets, mask, kernel, bias, p0, count, cols.flat<T>().data(),
                                         output, stream),
               "forward kernel launch")) {
      return;
    }
  }
}

template <typename T>
void Backward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs,
                                        const T* offsets, const T* mask, const T* kernel, const T* grad_output,
                                        T* grad_inputs, T* grad_offsets, T* grad_mask, T* grad_kernel) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  const size_t input_bytes = sizeof(T) * static_cast<size_t>(s.batch) * s.height * s.width * s.in_channels;
  const size_t kernel_bytes = sizeof(T) * static_cast<size_t>(s.row_length() / s.groups) * s.out_channels;
  if (!check(ctx, cudaMemsetAsync(grad_inputs, 0, input_bytes, stream), "zeroing grad_inputs")) return;
  if (!check(ctx, cudaMemsetAsync(grad_kernel, 0, kernel_bytes, stream), "zeroing grad_kernel")) return;
  if (s.rows() == 0) return;
  const long long chunk = chunk_rows(s, kMaxColumnElements / 2);
  tf::Tensor cols, grad_cols;
  if (!allocate_columns<T>(ctx, chunk * s.row_length(), &cols)) return;
  if (!allocate_columns<T>(ctx, chunk * s.row_length(), &grad_cols)) return;
  for (long long p0 = 0; p0 < s.rows(); p0 += chunk) {
    const long long count = std::min(chunk, s.rows() - p0);
    if (!check(ctx, launch_backward_chunk(s, inputs, offsets, mask, kernel, grad_output, p0, count,
                                          cols.flat<T>().data(), grad_cols.flat<T>().data(), grad_inputs,
                                          grad_offsets, grad_mask, grad_kernel, stream),
               "backward kernel launch")) {
      return;
    }
  }
}

template struct Forward<GPUDevice, float>;
template struct Forward<GPUDevice, double>;
template struct Backward<GPUDevice, float>;
template struct Backward<GPUDevice, double>;

}  // namespace deform_conv
}  // namespace tfdet

#endif  // GOOGLE_CUDA
