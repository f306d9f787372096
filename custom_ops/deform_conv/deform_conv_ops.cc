// Op registration and shape functions for Tfdet>DeformIm2col (the bilinear sampling of a deformable
// convolution) and Tfdet>DeformCol2im (its adjoint). tfdet.ops.deform_conv2d multiplies the columns
// with the kernel using tf.matmul.
#include "custom_ops/common/op_utils.h"
#include "tensorflow/core/framework/op.h"

namespace tfdet {

REGISTER_OP("Tfdet>DeformIm2col")
    .Input("inputs: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Output("columns: T")
    .Attr("kernel_size: list(int)")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("padding: list(int) = [0, 0]")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("groups: int >= 1 = 1")
    .Attr("deformable_groups: int >= 1 = 1")
    .Attr("modulated: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      ShapeHandle inputs, offsets;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &offsets));
      std::vector<int> kernel_size;
      TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &kernel_size));
      if (kernel_size.size() != 2) return InvalidArgument("deform_conv2d: kernel_size must have 2 values");
      DimensionHandle batch, length;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(inputs, 0), c->Dim(offsets, 0), &batch));
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(inputs, 3), kernel_size[0] * kernel_size[1], &length));
      c->set_output(0, c->MakeShape({batch, c->Dim(offsets, 1), c->Dim(offsets, 2), length}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Bilinear im2col of a deformable 2-D convolution on NHWC inputs (torchvision.ops.deform_conv2d
sampling). inputs: [N, H, W, C]. offsets: [N, Ho, Wo, 2 * deformable_groups * kh * kw], (dy, dx) per
kernel point. mask: [N, Ho, Wo, deformable_groups * kh * kw] when modulated, else ignored (shape [0]).
columns: [N, Ho, Wo, kh * kw * C], each row laid out [groups, kh * kw, C / groups].
)doc");

REGISTER_OP("Tfdet>DeformCol2im")
    .Input("inputs: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("grad_columns: T")
    .Output("grad_inputs: T")
    .Output("grad_offsets: T")
    .Output("grad_mask: T")
    .Attr("kernel_size: list(int)")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("padding: list(int) = [0, 0]")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("groups: int >= 1 = 1")
    .Attr("deformable_groups: int >= 1 = 1")
    .Attr("modulated: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Adjoint of Tfdet>DeformIm2col: the gradients of inputs, offsets and mask (shape [0] unless modulated)
given the gradient of the columns.
)doc");

}  // namespace tfdet
