// Deformable RoI pooling GPU functors: launch the framework-free kernels of
// kernels/deform_roi_pool_cuda.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/deform_roi_pool/deform_roi_pool_kernels.h"
#include "custom_ops/deform_roi_pool/kernels/deform_roi_pool_cuda.cuh"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfdet {
namespace deform_roi_pool {

constexpr char kOp[] = "deform_roi_pool";

template <typename T>
void Forward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, T gamma, const T* features,
                                       const T* boxes, const int* box_indices, const T* offsets, T* output) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  CheckCuda(ctx, kOp, launch_forward(s, gamma, features, boxes, box_indices, offsets, output, stream),
            "forward kernel launch");
}

template <typename T>
void Backward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, T gamma, const T* grad_output,
                                        const T* features, const T* boxes, const int* box_indices,
                                        const T* offsets, T* grad_features, T* grad_offsets) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  const size_t bytes = sizeof(T) * static_cast<size_t>(s.batch) * s.height * s.width * s.channels;
  if (!CheckCuda(ctx, kOp, cudaMemsetAsync(grad_features, 0, bytes, stream), "zeroing the gradient")) return;
  CheckCuda(ctx, kOp, launch_backward(s, gamma, grad_output, features, boxes, box_indices, offsets, grad_features,
                                      grad_offsets, stream),
            "backward kernel launch");
}

template struct Forward<GPUDevice, float>;
template struct Forward<GPUDevice, double>;
template struct Backward<GPUDevice, float>;
template struct Backward<GPUDevice, double>;

}  // namespace deform_roi_pool
}  // namespace tfdet

#endif  // GOOGLE_CUDA
