// Op registration and shape functions for Tfdet>DeformIm2col (the bilinear sampling of a deformable
// convolution) and Tfdet>DeformCol2im (its adjoint). tfdet.ops.deform_conv2d multiplies the columns
// with the kernel using tf.matmul.
#include "custom_ops/common/op_utils.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfdet {

REGISTER_OP("Tfdet>DeformIm2col")
    .Input("inputs: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("kernel_size: int32")
    .Output("columns: T")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("padding: list(int) = [0, 0]")
    .Attr("dilations: list(int) = [1, 1]")
    .Attr("groups: int >= 1 = 1")
    .Attr("deformable_groups: int >= 1 = 1")
    .Attr("modulated: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      ShapeHandle inputs, offsets, kernel_size;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &offsets));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &kernel_size));
      DimensionHandle batch, length = c->UnknownDim(), unused;
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(kernel_size, 0), 2, &unused));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(inputs, 0), c->Dim(offsets, 0), &batch));
      const tf::Tensor* size = c->input_tensor(3);  // known when the kernel's spatial size is static
      if (size != nullptr && size->NumElements() == 2) {
        const int kh = size->vec<int>()(0), kw = size->vec<int>()(1);
        if (kh < 1 || kw < 1) return InvalidArgument("deform_conv2d: kernel_size must be 2 positive ints");
        TF_RETURN_IF_ERROR(c->Multiply(c->Dim(inputs, 3), static_cast<int64_t>(kh) * kw, &length));
      }
      c->set_output(0, c->MakeShape({batch, c->Dim(offsets, 1), c->Dim(offsets, 2), length}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Bilinear im2col of a deformable 2-D convolution on NHWC inputs (torchvision.ops.deform_conv2d
sampling). inputs: [N, H, W, C]. offsets: [N, Ho, Wo, 2 * deformable_groups * kh * kw], (dy, dx) per
kernel point. mask: [N, Ho, Wo, deformable_groups * kh * kw] when modulated, else ignored (shape [0]).
kernel_size: [kh, kw] (host memory), the kernel's spatial size, which may be known only at run time.
columns: [N, Ho, Wo, kh * kw * C], each row laid out [groups, kh * kw, C / groups].
)doc");

REGISTER_OP("Tfdet>DeformCol2im")
    .Input("inputs: T")
    .Input("offsets: T")
    .Input("mask: T")
    .Input("kernel_size: int32")
    .Input("grad_columns: T")
    .Output("grad_inputs: T")
    .Output("grad_offsets: T")
    .Output("grad_mask: T")
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
