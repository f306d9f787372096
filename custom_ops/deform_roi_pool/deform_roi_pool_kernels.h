// Device functors of the deformable RoI pooling TF kernels. Inputs are validated by the OpKernels
// before a functor runs; `offsets` is null when the op has no offsets.
#ifndef TFDET_DEFORM_ROI_POOL_DEFORM_ROI_POOL_KERNELS_H_
#define TFDET_DEFORM_ROI_POOL_DEFORM_ROI_POOL_KERNELS_H_

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/deform_roi_pool/kernels/deform_roi_pool.h"

namespace tfdet {
namespace deform_roi_pool {

template <typename Device, typename T>
struct Forward;
template <typename Device, typename T>
struct Backward;  // writes all of grad_features (zeroing it first) and, with offsets, grad_offsets

#define TFDET_DEFORM_ROI_POOL_FUNCTORS(Device)                                                                \
  template <typename T>                                                                                       \
  struct Forward<Device, T> {                                                                                 \
    void operator()(::tensorflow::OpKernelContext* ctx, const Shape& s, T gamma, const T* features,          \
                    const T* boxes, const int* box_indices, const T* offsets, T* output);                    \
  };                                                                                                          \
  template <typename T>                                                                                       \
  struct Backward<Device, T> {                                                                                \
    void operator()(::tensorflow::OpKernelContext* ctx, const Shape& s, T gamma, const T* grad_output,       \
                    const T* features, const T* boxes, const int* box_indices, const T* offsets,             \
                    T* grad_features, T* grad_offsets);                                                       \
  };
TFDET_DEFORM_ROI_POOL_FUNCTORS(CPUDevice)
TFDET_DEFORM_ROI_POOL_FUNCTORS(GPUDevice)
#undef TFDET_DEFORM_ROI_POOL_FUNCTORS

}  // namespace deform_roi_pool
}  // namespace tfdet

#endif  // TFDET_DEFORM_ROI_POOL_DEFORM_ROI_POOL_KERNELS_H_
