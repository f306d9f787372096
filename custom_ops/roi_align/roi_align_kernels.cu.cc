// RoIAlign GPU functors: launch the framework-free kernels of kernels/roi_align_cuda.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/roi_align/kernels/roi_align_cuda.cuh"
#include "custom_ops/roi_align/roi_align_kernels.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfdet {
namespace roi_align {

constexpr char kOp[] = "roi_align";

template <typename T>
void Forward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* features, const T* boxes,
                                       const int* box_indices, const Shape& s, T* output) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  CheckCuda(ctx, kOp, launch_forward(features, boxes, box_indices, s, output, stream), "forward kernel launch");
}

template <typename T>
void Backward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* grad_output, const T* boxes,
                                        const int* box_indices, const Shape& s, T* grad_features) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  const size_t bytes = sizeof(T) * static_cast<size_t>(s.batch) * s.height * s.width * s.channels;
  if (!CheckCuda(ctx, kOp, cudaMemsetAsync(grad_features, 0, bytes, stream), "zeroing the gradient")) return;
  CheckCuda(ctx, kOp, launch_backward(grad_output, boxes, box_indices, s, grad_features, stream),
            "backward kernel launch");
}

template struct Forward<GPUDevice, float>;
template struct Forward<GPUDevice, double>;
template struct Backward<GPUDevice, float>;
template struct Backward<GPUDevice, double>;

}  // namespace roi_align
}  // namespace tfdet

#endif  // GOOGLE_CUDA
