// CARAFE TF kernels: input validation, allocation, and the multithreaded CPU functors.
#define EIGEN_USE_THREADS

#include "custom_ops/carafe/carafe_kernels.h"

#include <cstdint>

#include "custom_ops/common/kernel_utils.h"

namespace tfdet {
namespace carafe {

// Multiply-adds of one pixel's k*k taps over all channels, for the thread pool's cost model.
inline int64_t pixel_cost(const Shape& s) { return static_cast<int64_t>(s.taps()) * (2LL * s.channels + 10); }

// The loops over pixel ranges are compiled twice, for x86-64-v3 (AVX2 + FMA) and for the baseline,
// and the loader picks one for the CPU it runs on (GCC function multiversioning): the op library is
// built without -march flags, and the reassembly is bound by vector arithmetic.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TFDET_CPU_CLONES __attribute__((target_clones("fma", "default")))
#else
#define TFDET_CPU_CLONES
#endif

// Output pixels [begin, end) of the flattened [N, H*s, W*s] grid.
template <typename T>
TFDET_CPU_CLONES void forward_range(const T* features, const T* masks, const Shape& s, int64_t begin, int64_t end,
                                    T* output) {
  const int out_h = s.out_height(), out_w = s.out_width();
  for (int64_t p = begin; p < end; ++p) {
    const int x = static_cast<int>(p % out_w);
    const int y = static_cast<int>((p / out_w) % out_h);
    const int n = static_cast<int>(p / (static_cast<int64_t>(out_w) * out_h));
    forward_pixel<64>(features, masks, s, n, y, x, 0, s.channels, output + p * s.channels);
  }
}

// Input pixels [begin, end) of the flattened [N, H, W] grid.
template <typename T>
TFDET_CPU_CLONES void backward_features_range(const T* grad_output, const T* masks, const Shape& s, int64_t begin,
                                              int64_t end, T* grad_features) {
  for (int64_t p = begin; p < end; ++p) {
    const int ix = static_cast<int>(p % s.width);
    const int iy = static_cast<int>((p / s.width) % s.height);
    const int n = static_cast<int>(p / (static_cast<int64_t>(s.width) * s.height));
    backward_features_pixel<64>(grad_output, masks, s, n, iy, ix, 0, s.channels, grad_features + p * s.channels);
  }
}

// Output pixels [begin, end) of the flattened [N, H*s, W*s] grid.
template <typename T>
TFDET_CPU_CLONES void backward_masks_range(const T* grad_output, const T* features, const Shape& s, int64_t begin,
                                           int64_t end, T* grad_masks) {
  const int out_h = s.out_height(), out_w = s.out_width(), mc = s.mask_channels();
  for (int64_t p = begin; p < end; ++p) {
    const int x = static_cast<int>(p % out_w);
    const int y = static_cast<int>((p / out_w) % out_h);
    const int n = static_cast<int>(p / (static_cast<int64_t>(out_w) * out_h));
    for (int m = 0; m < mc; ++m) grad_masks[p * mc + m] = backward_mask_value<32>(grad_output, features, s, n, y, x, m);
  }
}

template <typename T>
void Forward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* features, const T* masks, const Shape& s,
                                       T* output) {
  ShardOnCpu(ctx, static_cast<int64_t>(s.batch) * s.out_height() * s.out_width(), pixel_cost(s),
             [&](int64_t begin, int64_t end) { forward_range(features, masks, s, begin, end, output); });
}

template <typename T>
void Backward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* grad_output, const T* features,
                                        const T* masks, const Shape& s, T* grad_features, T* grad_masks) {
  if (s.channels > 0) {  // no channels: grad_features is empty and grad_masks all zeros (below)
    ShardOnCpu(ctx, static_cast<int64_t>(s.batch) * s.height * s.width, pixel_cost(s) * s.scale_factor * s.scale_factor,
               [&](int64_t begin, int64_t end) {
                 backward_features_range(grad_output, masks, s, begin, end, grad_features);
               });
  }
  ShardOnCpu(ctx, static_cast<int64_t>(s.batch) * s.out_height() * s.out_width(), pixel_cost(s),
             [&](int64_t begin, int64_t end) {
               backward_masks_range(grad_output, features, s, begin, end, grad_masks);
             });
}

// Validates features [N, H, W, C] and masks [N, H*s, W*s, G*k*k] and fills *s. `op` names the op in errors.
inline void ValidateInputs(tf::OpKernelContext* ctx, const char* op, const tf::Tensor& features,
                           const tf::Tensor& masks, int kernel_size, int group_size, int scale_factor, Shape* s) {
  OP_REQUIRES(ctx, features.dims() == 4,
              InvalidArgument(op, ": features must be [N, H, W, C], got ", features.shape().DebugString()));
  OP_REQUIRES(ctx, masks.dims() == 4,
              InvalidArgument(op, ": masks must be [N, H*s, W*s, G*k*k], got ",
                                          masks.shape().DebugString()));
  for (int d = 0; d < 4; ++d) {
    OP_REQUIRES(ctx, features.dim_size(d) <= INT32_MAX / 64 && masks.dim_size(d) <= INT32_MAX / 64,
                InvalidArgument(op, ": dimension ", d, " of features or masks is too large"));
  }
  s->batch = static_cast<int>(features.dim_size(0));
  s->height = static_cast<int>(features.dim_size(1));
  s->width = static_cast<int>(features.dim_size(2));
  s->channels = static_cast<int>(features.dim_size(3));
  s->kernel_size = kernel_size;
  s->group_size = group_size;
  s->scale_factor = scale_factor;
  OP_REQUIRES(ctx, s->channels % group_size == 0,
              InvalidArgument(op, ": features channels (", s->channels,
                                          ") must be divisible by group_size (", group_size, ")"));
  OP_REQUIRES(ctx, masks.dim_size(0) == s->batch,
              InvalidArgument(op, ": masks batch (", masks.dim_size(0), ") must equal features batch (",
                                          s->batch, ")"));
  OP_REQUIRES(ctx,
              masks.dim_size(1) == static_cast<int64_t>(s->height) * scale_factor &&
                  masks.dim_size(2) == static_cast<int64_t>(s->width) * scale_factor,
              InvalidArgument(op, ": masks spatial size (", masks.dim_size(1), ", ", masks.dim_size(2),
                                          ") must be scale_factor (", scale_factor, ") times the features' (",
                                          s->height, ", ", s->width, ")"));
  OP_REQUIRES(ctx, masks.dim_size(3) == s->mask_channels(),
              InvalidArgument(op, ": masks must have group_size * kernel_size^2 = ", group_size, " * ",
                                          kernel_size, "^2 = ", s->mask_channels(), " channels, got ",
                                          masks.dim_size(3)));
}

// Reads and checks the attributes shared by the forward and backward kernels.
inline void ReadAttrs(tf::OpKernelConstruction* ctx, const char* op, int* kernel_size, int* group_size,
                      int* scale_factor) {
  OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_size", kernel_size));
  OP_REQUIRES_OK(ctx, ctx->GetAttr("group_size", group_size));
  OP_REQUIRES_OK(ctx, ctx->GetAttr("scale_factor", scale_factor));
  OP_REQUIRES(ctx, *kernel_size % 2 == 1,
              InvalidArgument(op, ": kernel_size must be odd, got ", *kernel_size));
  OP_REQUIRES(ctx, *kernel_size <= 63 && *scale_factor <= 64 && *group_size <= 4096,
              InvalidArgument(op, ": kernel_size (", *kernel_size, "), scale_factor (", *scale_factor,
                                          ") or group_size (", *group_size, ") is implausibly large"));
}

template <typename Device, typename T>
class CarafeOp : public tf::OpKernel {
 public:
  explicit CarafeOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    ReadAttrs(ctx, "carafe", &kernel_size_, &group_size_, &scale_factor_);
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& features = ctx->input(0);
    const tf::Tensor& masks = ctx->input(1);
    Shape s{};
    ValidateInputs(ctx, "carafe", features, masks, kernel_size_, group_size_, scale_factor_, &s);
    if (!ctx->status().ok()) return;
    tf::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, tf::TensorShape({s.batch, s.out_height(), s.out_width(), s.channels}), &output));
    if (output->NumElements() == 0) return;
    Forward<Device, T>()(ctx, features.flat<T>().data(), masks.flat<T>().data(), s, output->flat<T>().data());
  }

 private:
  int kernel_size_, group_size_, scale_factor_;
};

template <typename Device, typename T>
class CarafeGradOp : public tf::OpKernel {
 public:
  explicit CarafeGradOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    ReadAttrs(ctx, "carafe_grad", &kernel_size_, &group_size_, &scale_factor_);
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& grad = ctx->input(0);
    const tf::Tensor& features = ctx->input(1);
    const tf::Tensor& masks = ctx->input(2);
    Shape s{};
    ValidateInputs(ctx, "carafe_grad", features, masks, kernel_size_, group_size_, scale_factor_, &s);
    if (!ctx->status().ok()) return;
    const tf::TensorShape out_shape({s.batch, s.out_height(), s.out_width(), s.channels});
    OP_REQUIRES(ctx, grad.shape() == out_shape,
                InvalidArgument("carafe_grad: grad_output must be ", out_shape.DebugString(), ", got ",
                                            grad.shape().DebugString()));
    tf::Tensor* grad_features = nullptr;
    tf::Tensor* grad_masks = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, masks.shape(), &grad_masks));
    if (grad_features->NumElements() == 0 && grad_masks->NumElements() == 0) return;
    Backward<Device, T>()(ctx, grad.flat<T>().data(), features.flat<T>().data(), masks.flat<T>().data(), s,
                          grad_features->flat<T>().data(), grad_masks->flat<T>().data());
  }

 private:
  int kernel_size_, group_size_, scale_factor_;
};

TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>Carafe").Device(tf::DEVICE_CPU), CarafeOp, CPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>CarafeGrad").Device(tf::DEVICE_CPU), CarafeGradOp, CPUDevice);
#if GOOGLE_CUDA
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>Carafe").Device(tf::DEVICE_GPU), CarafeOp, GPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>CarafeGrad").Device(tf::DEVICE_GPU), CarafeGradOp, GPUDevice);
#endif  // GOOGLE_CUDA

}  // namespace carafe
}  // namespace tfdet
