// CARAFE GPU functors: launch the framework-free kernels of kernels/carafe_cuda.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "custom_ops/carafe/carafe_kernels.h"
#include "custom_ops/carafe/kernels/carafe_cuda.cuh"
#include "custom_ops/common/kernel_utils.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfdet {
namespace carafe {

constexpr char kOp[] = "carafe";

template <typename T>
void Forward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* features, const T* masks, const Shape& s,
                                       T* output) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  CheckCuda(ctx, kOp, launch_forward(features, masks, s, output, stream), "forward kernel launch");
}

template <typename T>
void Backward<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* grad_output, const T* features,
                                        const T* masks, const Shape& s, T* grad_features, T* grad_masks) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  CheckCuda(ctx, kOp, launch_backward(grad_output, features, masks, s, grad_features, grad_masks, stream),
            "backward kernel launch");
}

template struct Forward<GPUDevice, float>;
template struct Forward<GPUDevice, double>;
template struct Backward<GPUDevice, float>;
template struct Backward<GPUDevice, double>;

}  // namespace carafe
}  // namespace tfdet

#endif  // GOOGLE_CUDA
