// Device functors of the CARAFE TF kernels. Inputs are validated by the OpKernels before a functor runs.
#ifndef TFDET_CARAFE_CARAFE_KERNELS_H_
#define TFDET_CARAFE_CARAFE_KERNELS_H_

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/carafe/kernels/carafe.h"

namespace tfdet {
namespace carafe {

// Device functors, specialized for Eigen::ThreadPoolDevice (carafe_kernels.cc) and Eigen::GpuDevice
// (carafe_kernels.cu.cc). Each writes the whole of its outputs.
template <typename Device, typename T>
struct Forward;
template <typename Device, typename T>
struct Backward;

#define TFDET_CARAFE_FUNCTORS(Device)                                                                    \
  template <typename T>                                                                                  \
  struct Forward<Device, T> {                                                                            \
    void operator()(::tensorflow::OpKernelContext* ctx, const T* features, const T* masks, const Shape& s, \
                    T* output);                                                                          \
  };                                                                                                     \
  template <typename T>                                                                                  \
  struct Backward<Device, T> {                                                                           \
    void operator()(::tensorflow::OpKernelContext* ctx, const T* grad_output, const T* features,          \
                    const T* masks, const Shape& s, T* grad_features, T* grad_masks);                    \
  };
TFDET_CARAFE_FUNCTORS(CPUDevice)
TFDET_CARAFE_FUNCTORS(GPUDevice)
#undef TFDET_CARAFE_FUNCTORS

}  // namespace carafe
}  // namespace tfdet

#endif  // TFDET_CARAFE_CARAFE_KERNELS_H_
