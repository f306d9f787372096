// Op registration and shape functions for Tfdet>DeformConv2d and its gradient.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfdet {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("Tfdet>DeformConv2d")
    .Input("inputs: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Output("output: T")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("padding: list(int) = [0, 0]")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("groups: int >= 1 = 1")
    .Attr("deformable_groups: int >= 1 = 1")
    .Attr("modulated: bool = false")
    .Attr("has_bias: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle inputs, offsets, kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &offsets));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &kernel));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(inputs, 0), c->Dim(offsets, 0), &batch));
      c->set_output(0, c->MakeShape({batch, c->Dim(offsets, 1), c->Dim(offsets, 2), c->Dim(kernel, 3)}));
      return Status();
    })
    .Doc(R"doc(
Deformable 2-D convolution on NHWC inputs (torchvision.ops.deform_conv2d semantics).
inputs: [N, H, W, C]. offsets: [N, Ho, Wo, 2 * deformable_groups * kh * kw], (dy, dx) per kernel point.
mask: [N, Ho, Wo, deformable_groups * kh * kw] when modulated, else ignored (pass shape [0]).
kernel: [kh, kw, C / groups, Cout]. bias: [Cout] when has_bias, else ignored (pass shape [0]).
strides, padding, dilations: (height, width); padding is symmetric zero padding.
output: [N, Ho, Wo, Cout].
)doc");

REGISTER_OP("Tfdet>DeformConv2dGrad")
    .Input("inputs: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("kernel: T")
    .Input("grad_output: T")
    .Output("grad_inputs: T")
    .Output("grad_offsets: T")
    .Output("grad_mask: T")
    .Output("grad_kernel: T")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("padding: list(int) = [0, 0]")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("groups: int >= 1 = 1")
    .Attr("deformable_groups: int >= 1 = 1")
    .Attr("modulated: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> Status {
      for (int i = 0; i < 4; ++i) c->set_output(i, c->input(i));
      return Status();
    })
    .Doc("Gradient of Tfdet>DeformConv2d w.r.t. inputs, offsets, mask (shape [0] unless modulated) and kernel.");

}  // namespace tfdet
