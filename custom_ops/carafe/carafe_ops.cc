// Op registration and shape functions for Tfdet>Carafe and its gradient.
#include "custom_ops/common/op_utils.h"
#include "tensorflow/core/framework/op.h"

namespace tfdet {

namespace {

// Checks features [N, H, W, C] against masks [N, H*s, W*s, G*k*k]; sets *output to [N, H*s, W*s, C].
absl::Status CarafeShapes(InferenceContext* c, ShapeHandle features, ShapeHandle masks, ShapeHandle* output) {
  TF_RETURN_IF_ERROR(c->WithRank(features, 4, &features));
  TF_RETURN_IF_ERROR(c->WithRank(masks, 4, &masks));
  int kernel_size, group_size, scale_factor;
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &kernel_size));
  TF_RETURN_IF_ERROR(c->GetAttr("group_size", &group_size));
  TF_RETURN_IF_ERROR(c->GetAttr("scale_factor", &scale_factor));
  DimensionHandle batch, out_h, out_w, scaled, unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(features, 0), c->Dim(masks, 0), &batch));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(features, 1), scale_factor, &scaled));
  TF_RETURN_IF_ERROR(c->Merge(scaled, c->Dim(masks, 1), &out_h));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(features, 2), scale_factor, &scaled));
  TF_RETURN_IF_ERROR(c->Merge(scaled, c->Dim(masks, 2), &out_w));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(masks, 3), group_size * kernel_size * kernel_size, &unused));
  *output = c->MakeShape({batch, out_h, out_w, c->Dim(features, 3)});
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("Tfdet>Carafe")
    .Input("features: T")
    .Input("masks: T")
    .Output("output: T")
    .Attr("kernel_size: int >= 1")
    .Attr("group_size: int >= 1")
    .Attr("scale_factor: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      ShapeHandle output;
      TF_RETURN_IF_ERROR(CarafeShapes(c, c->input(0), c->input(1), &output));
      c->set_output(0, output);
      return absl::OkStatus();
    })
    .Doc(R"doc(
CARAFE feature reassembly on NHWC tensors (mmcv.ops.carafe semantics).
features: [N, H, W, C], C divisible by group_size. masks: [N, H*s, W*s, group_size*k*k], channel
g*k*k + dy*k + dx weighting tap (dy, dx) of channel group g. output: [N, H*s, W*s, C].
)doc");

REGISTER_OP("Tfdet>CarafeGrad")
    .Input("grad_output: T")
    .Input("features: T")
    .Input("masks: T")
    .Output("grad_features: T")
    .Output("grad_masks: T")
    .Attr("kernel_size: int >= 1")
    .Attr("group_size: int >= 1")
    .Attr("scale_factor: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      ShapeHandle output, unused;
      TF_RETURN_IF_ERROR(CarafeShapes(c, c->input(1), c->input(2), &output));
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), output, &unused));
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return absl::OkStatus();
    })
    .Doc("Gradients of Tfdet>Carafe with respect to its features and masks.");

}  // namespace tfdet
