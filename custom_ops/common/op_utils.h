// Helpers for the op registrations (*_ops.cc): error statuses and shared shape functions. The OpKernels'
// helpers are in kernel_utils.h. These headers depend on TensorFlow; the math in custom_ops/*/kernels/
// does not.
#ifndef TFDET_COMMON_OP_UTILS_H_
#define TFDET_COMMON_OP_UTILS_H_

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfdet {

namespace tf = ::tensorflow;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// InvalidArgument status with a message built from the pieces, e.g.
// OP_REQUIRES(ctx, ok, InvalidArgument("roi_align: boxes must be [K, 4], got ", shape)).
template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// Shape function of a RoI pooling op whose inputs 0-2 are features [N, H, W, C], boxes [K, 4] and
// box_indices [K] and whose output 0 is [K, pooled_height, pooled_width, C] (attributes).
inline absl::Status PooledRoisShape(InferenceContext* c) {
  ShapeHandle features, boxes, box_indices;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &features));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &boxes));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &box_indices));
  DimensionHandle unused, num_rois;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(boxes, 1), 4, &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(boxes, 0), c->Dim(box_indices, 0), &num_rois));
  int pooled_height, pooled_width;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &pooled_height));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pooled_width));
  c->set_output(0, c->MakeShape({num_rois, pooled_height, pooled_width, c->Dim(features, 3)}));
  return absl::OkStatus();
}

}  // namespace tfdet

#endif  // TFDET_COMMON_OP_UTILS_H_
