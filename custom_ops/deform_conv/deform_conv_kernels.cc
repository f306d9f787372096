// Deformable-convolution TF kernels: input validation, allocation, and the multithreaded CPU functors
// (bilinear im2col into a tile of columns, then an Eigen GEMM per convolution group, tiles sharded
// over TF's intra-op thread pool).
#define EIGEN_USE_THREADS

#include "custom_ops/deform_conv/deform_conv_kernels.h"

#include <algorithm>
#include <climits>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfdet {
namespace deform_conv {

namespace tf = ::tensorflow;
using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Rows per GEMM tile: about 1 MiB of columns, between 16 and 512 rows.
template <typename T>
long long tile_rows(const Shape& s) {
  const long long rows = (1LL << 20) / (static_cast<long long>(sizeof(T)) * std::max(1, s.row_length()));
  return std::min(512LL, std::max(16LL, rows));
}

// Columns of rows [p0, p1) into cols ((p1 - p0) x row_length, row-major).
template <typename T>
void im2col_rows(const Shape& s, const T* inputs, const T* offsets, const T* mask, long long p0, long long p1,
                 T* cols) {
  const long long image_size = static_cast<long long>(s.height) * s.width * s.in_channels;
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  const int cd = s.deform_channels();
  for (long long p = p0; p < p1; ++p) {
    const T* image = inputs + (p / plane) * image_size;
    T* row = cols + (p - p0) * s.row_length();
    for (int g = 0; g < s.deformable_groups; ++g) {
      for (int k = 0; k < s.taps(); ++k) im2col_point(s, image, offsets, mask, p, g, k, g * cd, (g + 1) * cd, row);
    }
  }
}

template <typename T>
void Forward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs,
                                       const T* offsets, const T* mask, const T* kernel, const T* bias,
                                       T* output) {
  const long long rows = s.rows(), tile = tile_rows<T>(s);
  const int L = s.row_length(), cout = s.out_channels, cout_g = cout / s.groups;
  const int kcg = s.taps() * s.group_channels();
  auto work = [&](long long begin, long long end) {
    std::vector<T> cols(static_cast<size_t>(tile) * L);
    for (long long t = begin; t < end; ++t) {
      const long long p0 = t * tile, p1 = std::min(rows, p0 + tile);
      const int m = static_cast<int>(p1 - p0);
      im2col_rows(s, inputs, offsets, mask, p0, p1, cols.data());
      MatrixMap<T> out(output + p0 * cout, m, cout, Eigen::OuterStride<>(cout));
      out.setZero();
      if (bias != nullptr) out.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, cout);
      for (int gr = 0; gr < s.groups; ++gr) {
        ConstMatrixMap<T> a(cols.data() + gr * kcg, m, kcg, Eigen::OuterStride<>(L));
        ConstMatrixMap<T> b(kernel + gr * cout_g, kcg, cout_g, Eigen::OuterStride<>(cout));
        MatrixMap<T> c(output + p0 * cout + gr * cout_g, m, cout_g, Eigen::OuterStride<>(cout));
        c.noalias() += a * b;
      }
    }
  };
  const auto& pool = *ctx->device()->tensorflow_cpu_worker_threads();
  const long long tiles = (rows + tile - 1) / tile;
  tf::Shard(pool.num_threads, pool.workers, tiles, tile * L * (2LL * cout_g + 40), work);
}

// Backward runs in blocks of rows. Each block recomputes its columns tile by tile, forms the columns'
// gradient (grad_output x kernel^T), accumulates columns^T x grad_output into its own kernel
// gradient and scatters the columns' gradient back through the bilinear taps. Blocks own whole images
// when there are enough images (they then write grad_inputs directly); otherwise each block
// scatters into its own copy and the copies are summed, so no two threads ever add to one address and
// the result does not depend on scheduling.
template <typename T>
void Backward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, const T* inputs,
                                        const T* offsets, const T* mask, const T* kernel, const T* grad_output,
                                        T* grad_inputs, T* grad_offsets, T* grad_mask, T* grad_kernel) {
  const long long rows = s.rows(), tile = tile_rows<T>(s);
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  const long long image_size = static_cast<long long>(s.height) * s.width * s.in_channels;
  const long long input_size = s.batch * image_size;
  const int L = s.row_length(), K = s.taps(), cout = s.out_channels, cout_g = cout / s.groups;
  const int kcg = K * s.group_channels(), cd = s.deform_channels(), dgk = s.deformable_groups * K;
  const long long kernel_size = static_cast<long long>(kcg) * cout;
  const auto& pool = *ctx->device()->tensorflow_cpu_worker_threads();

  long long blocks = std::max(1LL, std::min<long long>(pool.num_threads, (rows + tile - 1) / tile));
  const bool by_image = blocks > 1 && s.batch >= blocks;
  std::vector<long long> bounds(blocks + 1);
  for (long long b = 0; b <= blocks; ++b) {
    bounds[b] = by_image ? (s.batch * b / blocks) * plane : rows * b / blocks;
  }
  const bool private_inputs = blocks > 1 && !by_image;
  std::vector<T> extra_inputs(private_inputs ? (blocks - 1) * input_size : 0, T(0));
  std::vector<T> extra_kernels((blocks - 1) * kernel_size, T(0));
  std::fill(grad_inputs, grad_inputs + input_size, T(0));
  std::fill(grad_kernel, grad_kernel + kernel_size, T(0));

  auto run_block = [&](long long b) {
    T* gin = (b == 0 || !private_inputs) ? grad_inputs : extra_inputs.data() + (b - 1) * input_size;
    T* gk = b == 0 ? grad_kernel : extra_kernels.data() + (b - 1) * kernel_size;
    std::vector<T> cols(static_cast<size_t>(tile) * L), grad_cols(static_cast<size_t>(tile) * L);
    for (long long p0 = bounds[b]; p0 < bounds[b + 1]; p0 += tile) {
      const long long p1 = std::min(bounds[b + 1], p0 + tile);
      const int m = static_cast<int>(p1 - p0);
      im2col_rows(s, inputs, offsets, mask, p0, p1, cols.data());
      for (int gr = 0; gr < s.groups; ++gr) {
        ConstMatrixMap<T> go(grad_output + p0 * cout + gr * cout_g, m, cout_g, Eigen::OuterStride<>(cout));
        ConstMatrixMap<T> w(kernel + gr * cout_g, kcg, cout_g, Eigen::OuterStride<>(cout));
        ConstMatrixMap<T> a(cols.data() + gr * kcg, m, kcg, Eigen::OuterStride<>(L));
        MatrixMap<T> gc(grad_cols.data() + gr * kcg, m, kcg, Eigen::OuterStride<>(L));
        MatrixMap<T> gw(gk + gr * cout_g, kcg, cout_g, Eigen::OuterStride<>(cout));
        gc.noalias() = go * w.transpose();
        gw.noalias() += a.transpose() * go;
      }
      for (long long p = p0; p < p1; ++p) {
        const long long n = p / plane;
        const T* grad_row = grad_cols.data() + (p - p0) * L;
        for (int g = 0; g < s.deformable_groups; ++g) {
          for (int k = 0; k < K; ++k) {
            const PointGrad<T> pg = col2im_point(s, inputs + n * image_size, offsets, mask, p, g, k, g * cd,
                                                 (g + 1) * cd, grad_row, gin + n * image_size);
            grad_offsets[p * 2 * dgk + 2 * (g * K + k)] = pg.y;
            grad_offsets[p * 2 * dgk + 2 * (g * K + k) + 1] = pg.x;
            if (s.modulated) grad_mask[p * dgk + g * K + k] = pg.mask;
          }
        }
      }
    }
  };
  const long long block_cost = (rows / blocks + 1) * L * (4LL * cout_g + 80);
  tf::Shard(pool.num_threads, pool.workers, blocks, block_cost, [&](long long begin, long long end) {
    for (long long b = begin; b < end; ++b) run_block(b);
  });

  auto reduce = [&](T* dst, const std::vector<T>& extra, long long size) {
    if (extra.empty()) return;
    tf::Shard(pool.num_threads, pool.workers, size, 2 * blocks, [&](long long begin, long long end) {
      for (long long b = 0; b + 1 < blocks; ++b) {
        const T* src = extra.data() + b * size;
        for (long long i = begin; i < end; ++i) dst[i] += src[i];
      }
    });
  };
  reduce(grad_inputs, extra_inputs, input_size);
  reduce(grad_kernel, extra_kernels, kernel_size);
}

// Attributes shared by the forward and gradient ops.
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
                tf::errors::InvalidArgument("deform_conv2d: strides must be 2 positive ints"));
    OP_REQUIRES(ctx, dilations.size() == 2 && dilations[0] >= 1 && dilations[1] >= 1,
                tf::errors::InvalidArgument("deform_conv2d: dilations must be 2 positive ints"));
    OP_REQUIRES(ctx, padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0,
                tf::errors::InvalidArgument("deform_conv2d: padding must be 2 non-negative ints"));
  }
};

std::string shape_string(const tf::Tensor& t) { return t.shape().DebugString(); }

// Validates inputs, offsets, mask and kernel against each other and fills *s.
tf::Status make_shape(const Attrs& a, const tf::Tensor& inputs, const tf::Tensor& offsets, const tf::Tensor& mask,
                      const tf::Tensor& kernel, Shape* s) {
  using tf::errors::InvalidArgument;
  if (inputs.dims() != 4) return InvalidArgument("deform_conv2d: inputs must be [N, H, W, C], got ", shape_string(inputs));
  if (kernel.dims() != 4) {
    return InvalidArgument("deform_conv2d: kernel must be [kh, kw, C / groups, Cout], got ", shape_string(kernel));
  }
  for (int d = 0; d < 4; ++d) {
    if (inputs.dim_size(d) > INT_MAX / 4 || kernel.dim_size(d) > INT_MAX / 4) {
      return InvalidArgument("deform_conv2d: inputs or kernel dimension ", d, " is too large");
    }
  }
  s->batch = static_cast<int>(inputs.dim_size(0));
  s->height = static_cast<int>(inputs.dim_size(1));
  s->width = static_cast<int>(inputs.dim_size(2));
  s->in_channels = static_cast<int>(inputs.dim_size(3));
  s->kernel_h = static_cast<int>(kernel.dim_size(0));
  s->kernel_w = static_cast<int>(kernel.dim_size(1));
  s->out_channels = static_cast<int>(kernel.dim_size(3));
  s->stride_h = a.strides[0], s->stride_w = a.strides[1];
  s->pad_h = a.padding[0], s->pad_w = a.padding[1];
  s->dilation_h = a.dilations[0], s->dilation_w = a.dilations[1];
  s->groups = a.groups, s->deformable_groups = a.deformable_groups;
  s->modulated = a.modulated;
  if (static_cast<long long>(s->height) * s->width > INT_MAX) return InvalidArgument("deform_conv2d: inputs are too large");
  if (s->in_channels % s->groups != 0) {
    return InvalidArgument("deform_conv2d: inputs channels (", s->in_channels, ") must be divisible by groups (",
                           s->groups, ")");
  }
  if (s->in_channels % s->deformable_groups != 0) {
    return InvalidArgument("deform_conv2d: inputs channels (", s->in_channels,
                           ") must be divisible by deformable_groups (", s->deformable_groups, ")");
  }
  if (kernel.dim_size(2) != s->in_channels / s->groups || s->out_channels % s->groups != 0 || s->kernel_h < 1 ||
      s->kernel_w < 1) {
    return InvalidArgument("deform_conv2d: kernel must be [kh, kw, C / groups = ", s->in_channels / s->groups,
                           ", Cout] with Cout divisible by groups (", s->groups, "), got ", shape_string(kernel));
  }
  const long long span_h = static_cast<long long>(s->dilation_h) * (s->kernel_h - 1) + 1;
  const long long span_w = static_cast<long long>(s->dilation_w) * (s->kernel_w - 1) + 1;
  const long long out_h = (s->height + 2LL * s->pad_h - span_h) / s->stride_h + 1;
  const long long out_w = (s->width + 2LL * s->pad_w - span_w) / s->stride_w + 1;
  if (s->height + 2LL * s->pad_h < span_h || s->width + 2LL * s->pad_w < span_w) {
    return InvalidArgument("deform_conv2d: the padded inputs (", shape_string(inputs),
                           " with padding) are smaller than the dilated kernel");
  }
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
  if (static_cast<long long>(s->taps()) * s->in_channels > INT_MAX / 4) {
    return InvalidArgument("deform_conv2d: kh * kw * C is too large");
  }
  return tf::Status();
}

template <typename Device, typename T>
class DeformConv2dOp : public tf::OpKernel {
 public:
  explicit DeformConv2dOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx), attrs_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& bias = ctx->input(4);
    Shape s{};
    OP_REQUIRES_OK(ctx, make_shape(attrs_, ctx->input(0), ctx->input(1), ctx->input(2), ctx->input(3), &s));
    OP_REQUIRES(ctx, !has_bias_ || (bias.dims() == 1 && bias.dim_size(0) == s.out_channels),
                tf::errors::InvalidArgument("deform_conv2d: bias must be [Cout] = [", s.out_channels, "], got ",
                                            shape_string(bias)));
    tf::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tf::TensorShape({s.batch, s.out_h, s.out_w, s.out_channels}),
                                             &output));
    if (output->NumElements() == 0) return;
    Forward<Device, T>()(ctx, s, ctx->input(0).flat<T>().data(), ctx->input(1).flat<T>().data(),
                         s.modulated ? ctx->input(2).flat<T>().data() : nullptr, ctx->input(3).flat<T>().data(),
                         has_bias_ ? bias.flat<T>().data() : nullptr, output->flat<T>().data());
  }

 private:
  Attrs attrs_;
  bool has_bias_;
};

template <typename Device, typename T>
class DeformConv2dGradOp : public tf::OpKernel {
 public:
  explicit DeformConv2dGradOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx), attrs_(ctx) {}

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& grad = ctx->input(4);
    Shape s{};
    OP_REQUIRES_OK(ctx, make_shape(attrs_, ctx->input(0), ctx->input(1), ctx->input(2), ctx->input(3), &s));
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == s.batch && grad.dim_size(1) == s.out_h &&
                         grad.dim_size(2) == s.out_w && grad.dim_size(3) == s.out_channels,
                tf::errors::InvalidArgument("deform_conv2d_grad: grad_output must be [", s.batch, ", ", s.out_h, ", ",
                                            s.out_w, ", ", s.out_channels, "], got ", shape_string(grad)));
    tf::Tensor* outs[4];
    for (int i = 0; i < 4; ++i) {
      const tf::TensorShape shape = (i == 2 && !s.modulated) ? tf::TensorShape({0}) : ctx->input(i).shape();
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, shape, &outs[i]));
    }
    Backward<Device, T>()(ctx, s, ctx->input(0).flat<T>().data(), ctx->input(1).flat<T>().data(),
                          s.modulated ? ctx->input(2).flat<T>().data() : nullptr, ctx->input(3).flat<T>().data(),
                          grad.flat<T>().data(), outs[0]->flat<T>().data(), outs[1]->flat<T>().data(),
                          s.modulated ? outs[2]->flat<T>().data() : nullptr, outs[3]->flat<T>().data());
  }

 private:
  Attrs attrs_;
};

#define REGISTER_CPU(T)                                                                                   \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>DeformConv2d").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"),     \
                          DeformConv2dOp<CPUDevice, T>);                                                  \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>DeformConv2dGrad").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"), \
                          DeformConv2dGradOp<CPUDevice, T>);
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
extern template struct Forward<GPUDevice, float>;
extern template struct Forward<GPUDevice, double>;
extern template struct Backward<GPUDevice, float>;
extern template struct Backward<GPUDevice, double>;

#define REGISTER_GPU(T)                                                                                   \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>DeformConv2d").Device(tf::DEVICE_GPU).TypeConstraint<T>("T"),     \
                          DeformConv2dOp<GPUDevice, T>);                                                  \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>DeformConv2dGrad").Device(tf::DEVICE_GPU).TypeConstraint<T>("T"), \
                          DeformConv2dGradOp<GPUDevice, T>);
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace deform_conv
}  // namespace tfdet
