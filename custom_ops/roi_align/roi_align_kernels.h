// Device functors of the RoIAlign TF kernels. Inputs are validated by the OpKernels before a functor runs.
#ifndef TFDET_ROI_ALIGN_ROI_ALIGN_KERNELS_H_
#define TFDET_ROI_ALIGN_ROI_ALIGN_KERNELS_H_

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/roi_align/kernels/roi_align.h"

namespace tfdet {
namespace roi_align {

// Device functors, specialized for Eigen::ThreadPoolDevice (roi_align_kernels.cc) and
// Eigen::GpuDevice (roi_align_kernels.cu.cc).
template <typename Device, typename T>
struct Forward;
template <typename Device, typename T>
struct Backward;  // writes the whole of grad_features (zeroing it first)

#define TFDET_ROI_ALIGN_FUNCTORS(Device)                                                                      \
  template <typename T>                                                                                       \
  struct Forward<Device, T> {                                                                                 \
    void operator()(::tensorflow::OpKernelContext* ctx, const T* features, const T* boxes,                   \
                    const int* box_indices, const Shape& s, T* output);                                      \
  };                                                                                                          \
  template <typename T>                                                                                       \
  struct Backward<Device, T> {                                                                                \
    void operator()(::tensorflow::OpKernelContext* ctx, const T* grad_output, const T* boxes,                \
                    const int* box_indices, const Shape& s, T* grad_features);                               \
  };
TFDET_ROI_ALIGN_FUNCTORS(CPUDevice)
TFDET_ROI_ALIGN_FUNCTORS(GPUDevice)
#undef TFDET_ROI_ALIGN_FUNCTORS

}  // namespace roi_align
}  // namespace tfdet

#endif  // TFDET_ROI_ALIGN_ROI_ALIGN_KERNELS_H_
