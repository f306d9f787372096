// Device functors of the RoIAlign TF kernels. Inputs are validated by the OpKernels before a functor runs.
#ifndef TFDET_ROI_ALIGN_ROI_ALIGN_KERNELS_H_
#define TFDET_ROI_ALIGN_ROI_ALIGN_KERNELS_H_

#include <cstdio>

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

// Rejects, before any work, a sampling grid beyond grid_limit (kernels/roi_align.h): a sampling_ratio
// above it, or, when the boxes are in host memory, a box whose adaptive grid (sampling_ratio = 0) is.
// The Python wrappers check the same before calling the op, on every device; `op` starts the message.
template <typename T>
absl::Status ValidateSamplingGrid(const char* op, const Shape& s, const tf::Tensor& boxes, bool on_host) {
  const int limit_h = grid_limit(s.height, s.pooled_h), limit_w = grid_limit(s.width, s.pooled_w);
  const auto where = [&]() {
    return absl::StrCat(" for features of height ", s.height, " and width ", s.width, " and output ", s.pooled_h,
                        "x", s.pooled_w, " (the limit per bin side is max(", kGridLimitFloor, ", ceil(",
                        kGridLimitMapFactor, " * feature side / output side)))");
  };
  if (s.sampling_ratio > limit_h || s.sampling_ratio > limit_w) {
    return InvalidArgument(op, ": sampling_ratio = ", s.sampling_ratio, " exceeds the limit of ", limit_h, " x ",
                           limit_w, " samples per bin", where());
  }
  if (!on_host) return absl::OkStatus();
  T cells_h = T(0), cells_w = T(0);
  const long long k = first_box_over_grid_limit(boxes.flat<T>().data(), s, &cells_h, &cells_w);
  if (k < 0) return absl::OkStatus();
  char grid[64];  // "%.9g": the float32 formatting of the Python wrappers' message
  std::snprintf(grid, sizeof(grid), "%.9g x %.9g", static_cast<double>(cells_h), static_cast<double>(cells_w));
  return InvalidArgument(op, ": box ", k, " has an adaptive sampling grid (sampling_ratio = 0) of ", grid,
                         " samples per bin, beyond the limit of ", limit_h, " x ", limit_w, where(),
                         ", which every box up to ", kGridLimitMapFactor,
                         " times the feature map's size meets; clip the boxes or pass a sampling_ratio > 0");
}

}  // namespace roi_align
}  // namespace tfdet

#endif  // TFDET_ROI_ALIGN_ROI_ALIGN_KERNELS_H_
