// Op registration and shape functions for Tfdet>RoiAlign and its gradient.
#include "custom_ops/common/op_utils.h"
#include "tensorflow/core/framework/op.h"

namespace tfdet {

REGISTER_OP("Tfdet>RoiAlign")
    .Input("features: T")
    .Input("boxes: T")
    .Input("box_indices: int32")
    .Output("output: T")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int >= 0 = 0")
    .Attr("aligned: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn(PooledRoisShape)
    .Doc(R"doc(
RoIAlign on NHWC features (torchvision.ops.roi_align semantics).
features: [N, H, W, C]. boxes: [K, 4] (x1, y1, x2, y2) in input pixels. box_indices: [K] in [0, N).
output: [K, pooled_height, pooled_width, C].
)doc");

REGISTER_OP("Tfdet>RoiAlignGrad")
    .Input("grad_output: T")
    .Input("boxes: T")
    .Input("box_indices: int32")
    .Input("features_shape: int32")
    .Output("grad_features: T")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int >= 0 = 0")
    .Attr("aligned: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      ShapeHandle grad, shape;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &grad));
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(3, &shape));
      TF_RETURN_IF_ERROR(c->WithRank(shape, 4, &shape));
      c->set_output(0, shape);
      return absl::OkStatus();
    })
    .Doc("Gradient of Tfdet>RoiAlign with respect to its features.");

}  // namespace tfdet
