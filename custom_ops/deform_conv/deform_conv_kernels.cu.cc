// Deformable-convolution GPU functors: launch the framework-free kernels of
// kernels/deform_conv_cuda.cuh on TF's stream.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/deform_conv/deform_conv_kernels.h"
#include "custom_ops/deform_conv/kernels/deform_conv_cuda.cuh"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tfdet {
namespace deform_conv {

constexpr char kOp[] = "deform_conv2d";

template <typename T>
void Im2col<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs, const T* offsets,
                                      const T* mask, T* columns) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  CheckCuda(ctx, kOp, launch_im2col(s, inputs, offsets, mask, columns, stream), "im2col kernel launch");
}

template <typename T>
void Col2im<GPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs, const T* offsets,
                                      const T* mask, const T* grad_columns, T* grad_inputs, T* grad_offsets,
                                      T* grad_mask) {
  cudaStream_t stream = ctx->eigen_device<GPUDevice>().stream();
  const size_t bytes = sizeof(T) * static_cast<size_t>(s.batch) * s.height * s.width * s.in_channels;
  if (!CheckCuda(ctx, kOp, cudaMemsetAsync(grad_inputs, 0, bytes, stream), "zeroing the inputs' gradient")) return;
  CheckCuda(ctx, kOp,
            launch_col2im(s, inputs, offsets, mask, grad_columns, grad_inputs, grad_offsets, grad_mask, stream),
            "col2im kernel launch");
}

template struct Im2col<GPUDevice, float>;
template struct Im2col<GPUDevice, double>;
template struct Col2im<GPUDevice, float>;
template struct Col2im<GPUDevice, double>;

}  // namespace deform_conv
}  // namespace tfdet

#endif  // GOOGLE_CUDA
