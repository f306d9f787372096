// Device functors of the deformable-convolution TF kernels. Inputs are validated by the OpKernels
// before a functor runs.
#ifndef TFDET_DEFORM_CONV_DEFORM_CONV_KERNELS_H_
#define TFDET_DEFORM_CONV_DEFORM_CONV_KERNELS_H_

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/deform_conv/kernels/deform_conv.h"

namespace tfdet {
namespace deform_conv {

// Device functors, specialized for Eigen::ThreadPoolDevice (deform_conv_kernels.cc) and
// Eigen::GpuDevice (deform_conv_kernels.cu.cc). `mask` is read and `grad_mask` written only when
// s.modulated. Col2im writes all of grad_inputs (zeroing it first), grad_offsets and grad_mask.
template <typename Device, typename T>
struct Im2col;
template <typename Device, typename T>
struct Col2im;

#define TFDET_DEFORM_CONV_FUNCTORS(Device)                                                                    \
  template <typename T>                                                                                       \
  struct Im2col<Device, T> {                                                                                  \
    void operator()(::tensorflow::OpKernelContext* ctx, const Shape& s, const T* inputs, const T* offsets,    \
                    const T* mask, T* columns);                                                               \
  };                                                                                                          \
  template <typename T>                                                                                       \
  struct Col2im<Device, T> {                                                                                  \
    void operator()(::tensorflow::OpKernelContext* ctx, const Shape& s, const T* inputs, const T* offsets,    \
                    const T* mask, const T* grad_columns, T* grad_inputs, T* grad_offsets, T* grad_mask);     \
  };
TFDET_DEFORM_CONV_FUNCTORS(CPUDevice)
TFDET_DEFORM_CONV_FUNCTORS(GPUDevice)
#undef TFDET_DEFORM_CONV_FUNCTORS

}  // namespace deform_conv
}  // namespace tfdet

#endif  // TFDET_DEFORM_CONV_DEFORM_CONV_KERNELS_H_
