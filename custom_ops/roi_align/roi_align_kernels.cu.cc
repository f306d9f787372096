// RoIAlign GPU functors: launch the framework-free kernels of kernels/roi_align_cuda.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "absl/strings/str_cat.h"
#include "custom_ops/roi_align/kernels/roi_align_cuda.cuh"
#include "custom_ops/roi_align/roi_align_kernels.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfdet {
namespace roi_align {

namespace tf = ::tensorflow;
using GPUDevice = Eigen::GpuDevice;

inline void check_launch(tf::OpKernelContext* ctx, cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    ctx->SetStatus(absl::InternalError(absl::StrCat("roi_align: ", what, " failed: ", cudaGetErrorString(err))));
  }
}

template <typename T>
void Forward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* features, const T* boxes,
                                       const int* box_indices, const Shape& s, T* output) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  check_launch(ctx, launch_forward(features, boxes, box_indices, s, output, stream), "forward kernel launch");
}

template <typename T>
void Backward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* grad_output, const T* boxes,
                                        const int* box_indices, const Shape& s, T* grad_features) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  const size_t bytes = sizeof(T) * static_cast<size_t>(s.batch) * s.height * s.width * s.channels;
  check_launch(ctx, cudaMemsetAsync(grad_features, 0, bytes, stream), "zeroing the gradient");
  if (!ctx->status().ok()) return;
  check_launch(ctx, launch_backward(grad_output, boxes, box_indices, s, grad_features, stream),
               "backward kernel launch");
}

template struct Forward<GPUDevice, float>;
template struct Forward<GPUDevice, double>;
template struct Backward<GPUDevice, float>;
template struct Backward<GPUDevice, double>;

}  // namespace roi_align
}  // namespace tfdet

#endif  // GOOGLE_CUDA
