// Deformable-convolution TF kernels: input validation, allocation, and the multithreaded CPU functors
// of the bilinear im2col and its adjoint (the GEMMs run in tf.matmul; see tfdet/ops/deform_conv.py).
#define EIGEN_USE_THREADS

#include "custom_ops/deform_conv/deform_conv_kernels.h"

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "custom_ops/common/kernel_utils.h"

namespace tfdet {
namespace deform_conv {

// Rows are independent: each writes its own row of columns.
template <typename T>
void Im2col<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs, const T* offsets,
                                      const T* mask, T* columns) {
  const long long image_size = static_cast<long long>(s.height) * s.width * s.in_channels;
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  const int cd = s.deform_channels();
  auto work = [&](long long begin, long long end) {
    for (long long p = begin; p < end; ++p) {
      const T* image = inputs + (p / plane) * image_size;
      T* row = columns + p * s.row_length();
      for (int g = 0; g < s.deformable_groups; ++g) {
        for (int k = 0; k < s.taps(); ++k) im2col_point(s, image, offsets, mask, p, g, k, g * cd, (g + 1) * cd, row);
      }
    }
  };
  ShardOnCpu(ctx, s.rows(), 40LL * s.deformable_groups * s.taps() + 10LL * s.row_length(), work);
}

// Threads own disjoint blocks of channels, so their scatter-adds into grad_inputs never meet. Each
// block sums its channels' share of every sample's (y, x, mask) gradient into its own partial buffer;
// the partials are then added up. The result does not depend on scheduling.
template <typename T>
void Col2im<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs, const T* offsets,
                                      const T* mask, const T* grad_columns, T* grad_inputs, T* grad_offsets,
                                      T* grad_mask) {
  const long long image_size = static_cast<long long>(s.height) * s.width * s.in_channels;
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  const int K = s.taps(), cd = s.deform_channels(), dgk = s.deformable_groups * K;
  const long long points = s.rows() * dgk;
  std::fill(grad_inputs, grad_inputs + s.batch * image_size, T(0));
  const int blocks = std::max(1, std::min(CpuThreads(ctx), s.in_channels / 16));
  std::vector<PointGrad<T>> partial(static_cast<size_t>(blocks) * points);
  auto work = [&](long long begin, long long end) {
    for (long long b = begin; b < end; ++b) {
      const int c0 = static_cast<int>(s.in_channels * b / blocks);
      const int c1 = static_cast<int>(s.in_channels * (b + 1) / blocks);
      PointGrad<T>* out = partial.data() + b * points;
      for (long long p = 0; p < s.rows(); ++p) {
        const long long n = p / plane;
        for (int g = 0; g < s.deformable_groups; ++g) {
          const int lo = std::max(c0, g * cd), hi = std::min(c1, (g + 1) * cd);
          for (int k = 0; k < K; ++k) {
            out[p * dgk + g * K + k] = lo < hi ? col2im_point(s, inputs + n * image_size, offsets, mask, p, g, k, lo,
                                                              hi, grad_columns + p * s.row_length(),
                                                              grad_inputs + n * image_size)
                                               : PointGrad<T>{T(0), T(0), T(0)};
          }
        }
      }
    }
  };
  ShardOnCpu(ctx, blocks, s.rows() * (40LL * dgk + 24LL * s.row_length() / blocks), work);
  ShardOnCpu(ctx, points, 6 * blocks, [&](long long begin, long long end) {
    for (long long i = begin; i < end; ++i) {
      PointGrad<T> sum{T(0), T(0), T(0)};
      for (int b = 0; b < blocks; ++b) {
        const PointGrad<T>& v = partial[b * points + i];
        sum.y += v.y;
        sum.x += v.x;
        sum.mask += v.mask;
      }
      grad_offsets[2 * i] = sum.y;
      grad_offsets[2 * i + 1] = sum.x;
      if (s.modulated) grad_mask[i] = sum.mask;
    }
  });
}

// Attributes shared by the im2col and col2im ops.
struct Attrs {
  std::vector<int> strides, padding, dilations;
  int groups, deformable_groups;
  bool modulated;

  explicit Attrs(tf::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilations", &dilations));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("deformable_groups", &deformable_groups));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("modulated", &modulated));
    OP_REQUIRES(ctx, strides.size() == 2 && strides[0] >= 1 && strides[1] >= 1,
                InvalidArgument("deform_conv2d: strides must be 2 positive ints"));
    OP_REQUIRES(ctx, dilations.size() == 2 && dilations[0] >= 1 && dilations[1] >= 1,
                InvalidArgument("deform_conv2d: dilations must be 2 positive ints"));
    OP_REQUIRES(ctx, padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0,
                InvalidArgument("deform_conv2d: padding must be 2 non-negative ints"));
  }
};

inline std::string shape_string(const tf::Tensor& t) { return t.shape().DebugString(); }

// Validates inputs, offsets, mask and kernel_size ([kh, kw], host memory) against each other and the
// attributes, and fills *s.
absl::Status make_shape(const Attrs& a, const tf::Tensor& inputs, const tf::Tensor& offsets, const tf::Tensor& mask,
                        const tf::Tensor& kernel_size, Shape* s) {
  TF_RETURN_IF_ERROR(ValidateNhwc("deform_conv2d", "inputs", inputs, INT_MAX / 4));
  if (kernel_size.dims() != 1 || kernel_size.NumElements() != 2) {
    return InvalidArgument("deform_conv2d: kernel_size must be [kh, kw], got shape ", shape_string(kernel_size));
  }
  const int kh = kernel_size.vec<int>()(0), kw = kernel_size.vec<int>()(1);
  if (kh < 1 || kw < 1 || static_cast<long long>(kh) * kw > INT_MAX / 4) {
    return InvalidArgument("deform_conv2d: the kernel's spatial size must be positive and not too large, got ", kh,
                           "x", kw);
  }
  s->batch = static_cast<int>(inputs.dim_size(0));
  s->height = static_cast<int>(inputs.dim_size(1));
  s->width = static_cast<int>(inputs.dim_size(2));
  s->in_channels = static_cast<int>(inputs.dim_size(3));
  s->kernel_h = kh, s->kernel_w = kw;
  s->stride_h = a.strides[0], s->stride_w = a.strides[1];
  s->pad_h = a.padding[0], s->pad_w = a.padding[1];
  s->dilation_h = a.dilations[0], s->dilation_w = a.dilations[1];
  s->groups = a.groups, s->deformable_groups = a.deformable_groups;
  s->modulated = a.modulated;
  if (static_cast<long long>(s->height) * s->width > INT_MAX) return InvalidArgument("deform_conv2d: inputs are too large");
  if (static_cast<long long>(s->taps()) * s->in_channels > INT_MAX / 4) {
    return InvalidArgument("deform_conv2d: kh * kw * C is too large");
  }
  if (s->in_channels % s->groups != 0) {
    return InvalidArgument("deform_conv2d: inputs channels (", s->in_channels, ") must be divisible by groups (",
                           s->groups, ")");
  }
  if (s->in_channels % s->deformable_groups != 0) {
    return InvalidArgument("deform_conv2d: inputs channels (", s->in_channels,
                           ") must be divisible by deformable_groups (", s->deformable_groups, ")");
  }
  const long long span_h = static_cast<long long>(s->dilation_h) * (s->kernel_h - 1) + 1;
  const long long span_w = static_cast<long long>(s->dilation_w) * (s->kernel_w - 1) + 1;
  if (s->height + 2LL * s->pad_h < span_h || s->width + 2LL * s->pad_w < span_w) {
    return InvalidArgument("deform_conv2d: inputs ", shape_string(inputs), " with padding (", s->pad_h, ", ",
                           s->pad_w, ") are smaller than the dilated ", s->kernel_h, "x", s->kernel_w,
                           " kernel (it spans ", span_h, "x", span_w, " pixels)");
  }
  const long long out_h = (s->height + 2LL * s->pad_h - span_h) / s->stride_h + 1;
  const long long out_w = (s->width + 2LL * s->pad_w - span_w) / s->stride_w + 1;
  s->out_h = static_cast<int>(out_h);
  s->out_w = static_cast<int>(out_w);
  const long long dgk = static_cast<long long>(s->deformable_groups) * s->taps();
  if (offsets.dims() != 4 || offsets.dim_size(0) != s->batch || offsets.dim_size(1) != out_h ||
      offsets.dim_size(2) != out_w || offsets.dim_size(3) != 2 * dgk) {
    return InvalidArgument("deform_conv2d: offsets must be [N, Ho, Wo, 2 * deformable_groups * kh * kw] = [",
                           s->batch, ", ", out_h, ", ", out_w, ", ", 2 * dgk, "], got ", shape_string(offsets));
  }
  if (s->modulated && (mask.dims() != 4 || mask.dim_size(0) != s->batch || mask.dim_size(1) != out_h ||
                       mask.dim_size(2) != out_w || mask.dim_size(3) != dgk)) {
    return InvalidArgument("deform_conv2d: mask must be [N, Ho, Wo, deformable_groups * kh * kw] = [", s->batch,
                           ", ", out_h, ", ", out_w, ", ", dgk, "], got ", shape_string(mask));
  }
  return absl::OkStatus();
}

template <typename Device, typename T>
class DeformIm2colOp : public tf::OpKernel {
 public:
  explicit DeformIm2colOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx), attrs_(ctx) {}

  void Compute(tf::OpKernelContext* ctx) override {
    Shape s{};
    OP_REQUIRES_OK(ctx, make_shape(attrs_, ctx->input(0), ctx->input(1), ctx->input(2), ctx->input(3), &s));
    tf::Tensor* columns = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tf::TensorShape({s.batch, s.out_h, s.out_w, s.row_length()}),
                                             &columns));
    if (columns->NumElements() == 0) return;
    Im2col<Device, T>()(ctx, s, ctx->input(0).flat<T>().data(), ctx->input(1).flat<T>().data(),
                        s.modulated ? ctx->input(2).flat<T>().data() : nullptr, columns->flat<T>().data());
  }

 private:
  Attrs attrs_;
};

template <typename Device, typename T>
class DeformCol2imOp : public tf::OpKernel {
 public:
  explicit DeformCol2imOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx), attrs_(ctx) {}

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& grad = ctx->input(4);
    Shape s{};
    OP_REQUIRES_OK(ctx, make_shape(attrs_, ctx->input(0), ctx->input(1), ctx->input(2), ctx->input(3), &s));
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == s.batch && grad.dim_size(1) == s.out_h &&
                         grad.dim_size(2) == s.out_w && grad.dim_size(3) == s.row_length(),
                InvalidArgument("deform_conv2d: grad_columns must be [", s.batch, ", ", s.out_h, ", ",
                                            s.out_w, ", ", s.row_length(), "], got ", shape_string(grad)));
    tf::Tensor* outs[3];
    for (int i = 0; i < 3; ++i) {
      const tf::TensorShape shape = (i == 2 && !s.modulated) ? tf::TensorShape({0}) : ctx->input(i).shape();
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, shape, &outs[i]));
    }
    if (outs[0]->NumElements() == 0 && outs[1]->NumElements() == 0) return;
    Col2im<Device, T>()(ctx, s, ctx->input(0).flat<T>().data(), ctx->input(1).flat<T>().data(),
                        s.modulated ? ctx->input(2).flat<T>().data() : nullptr, grad.flat<T>().data(),
                        outs[0]->flat<T>().data(), outs[1]->flat<T>().data(),
                        s.modulated ? outs[2]->flat<T>().data() : nullptr);
  }

 private:
  Attrs attrs_;
};

TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformIm2col").Device(tf::DEVICE_CPU), DeformIm2colOp, CPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformCol2im").Device(tf::DEVICE_CPU), DeformCol2imOp, CPUDevice);
#if GOOGLE_CUDA
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformIm2col").Device(tf::DEVICE_GPU).HostMemory("kernel_size"),
                             DeformIm2colOp, GPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformCol2im").Device(tf::DEVICE_GPU).HostMemory("kernel_size"),
                             DeformCol2imOp, GPUDevice);
#endif  // GOOGLE_CUDA

}  // namespace deform_conv
}  // namespace tfdet
