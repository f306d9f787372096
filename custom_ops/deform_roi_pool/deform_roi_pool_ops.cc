// Op registration and shape functions for Tfdet>DeformRoiPool and its gradient.
#include "custom_ops/common/op_utils.h"
#include "tensorflow/core/framework/op.h"

namespace tfdet {

REGISTER_OP("Tfdet>DeformRoiPool")
    .Input("features: T")
    .Input("boxes: T")
    .Input("box_indices: int32")
    .Input("offsets: T")
    .Output("output: T")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int >= 0 = 0")
    .Attr("gamma: float = 0.1")
    .Attr("has_offsets: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn(PooledRoisShape)
    .Doc(R"doc(
Deformable RoI pooling on NHWC features (mmcv DeformRoIPool semantics: RoIAlign with half-pixel
alignment whose bins move by gamma * RoI size * offset). features: [N, H, W, C]. boxes: [K, 4]
(x1, y1, x2, y2) in input pixels. box_indices: [K] in [0, N). offsets: [K, pooled_height,
pooled_width, 2] (x, y) when has_offsets, else ignored (shape [0]). output: [K, ph, pw, C].
)doc");

REGISTER_OP("Tfdet>DeformRoiPoolGrad")
    .Input("grad_output: T")
    .Input("features: T")
    .Input("boxes: T")
    .Input("box_indices: int32")
    .Input("offsets: T")
    .Output("grad_features: T")
    .Output("grad_offsets: T")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int >= 0 = 0")
    .Attr("gamma: float = 0.1")
    .Attr("has_offsets: bool = true")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(4));
      return absl::OkStatus();
    })
    .Doc("Gradient of Tfdet>DeformRoiPool w.r.t. its features and offsets (shape [0] without offsets).");

}  // namespace tfdet
