// RoIAlign TF kernels: input validation, allocation, and the multithreaded CPU functors.
#define EIGEN_USE_THREADS

#include "custom_ops/roi_align/roi_align_kernels.h"

#include <algorithm>
#include <cstring>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"
#include "custom_ops/common/op_utils.h"

namespace tfdet {
namespace roi_align {

namespace tf = ::tensorflow;
using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

// Bilinear taps and multiply-adds of one output bin, for the thread pool's cost model.
inline long long bin_cost(const Shape& s, int channels) {
  const int grid = s.sampling_ratio > 0 ? s.sampling_ratio * s.sampling_ratio : 4;
  return static_cast<long long>(grid) * (40 + 8LL * channels);
}

template <typename T>
void Forward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* features, const T* boxes,
                                       const int* box_indices, const Shape& s, T* output) {
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  const long long image_size = static_cast<long long>(s.height) * s.width * s.channels;
  auto work = [&](long long begin, long long end) {
    for (long long bin = begin; bin < end; ++bin) {
      const Bin b = unflatten_bin(bin, s);
      const RoiGrid<T> g = make_grid(boxes + 4 * b.k, s);
      forward_bin(features + box_indices[b.k] * image_size, g, b.ph, b.pw, s, 0, s.channels, output + bin * s.channels);
    }
  };
  const auto& pool = *ctx->device()->tensorflow_cpu_worker_threads();
  tf::Shard(pool.num_threads, pool.workers, bins, bin_cost(s, s.channels), work);
}

// Threads own disjoint channel blocks, so scatter-adds never race and the result does not depend on
// the number of threads.
template <typename T>
void Backward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* grad_output, const T* boxes,
                                        const int* box_indices, const Shape& s, T* grad_features) {
  const long long image_size = static_cast<long long>(s.height) * s.width * s.channels;
  const auto& pool = *ctx->device()->tensorflow_cpu_worker_threads();
  tf::Shard(pool.num_threads, pool.workers, s.batch * image_size, 1,
            [&](long long begin, long long end) { std::fill(grad_features + begin, grad_features + end, T(0)); });
  if (s.channels == 0) return;
  const int blocks = std::min(s.channels, std::max(1, pool.num_threads));
  const int block = (s.channels + blocks - 1) / blocks;
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  auto work = [&](long long begin, long long end) {
    for (long long b = begin; b < end; ++b) {
      const int c_begin = static_cast<int>(b) * block;
      const int c_end = std::min(s.channels, c_begin + block);
      for (long long bin = 0; bin < bins; ++bin) {
        const Bin b = unflatten_bin(bin, s);
        const RoiGrid<T> g = make_grid(boxes + 4 * b.k, s);
        backward_bin(grad_output + bin * s.channels, g, b.ph, b.pw, s, c_begin, c_end,
                     grad_features + box_indices[b.k] * image_size);
      }
    }
  };
  tf::Shard(pool.num_threads, pool.workers, (s.channels + block - 1) / block, bins * bin_cost(s, block), work);
}

// Checks shared by the forward and backward kernels; fills *s (all but pooled_h/pooled_w/channels).
inline void ValidateRois(tf::OpKernelContext* ctx, const tf::Tensor& boxes, const tf::Tensor& box_indices,
                         int batch, bool on_host, Shape* s) {
  OP_REQUIRES(ctx, boxes.dims() == 2 && boxes.dim_size(1) == 4,
              InvalidArgument("roi_align: boxes must have shape [K, 4], got ",
                                          boxes.shape().DebugString()));
  OP_REQUIRES(ctx, box_indices.dims() == 1 && box_indices.dim_size(0) == boxes.dim_size(0),
              InvalidArgument("roi_align: box_indices must have shape [K] = [", boxes.dim_size(0),
                                          "] to match boxes, got ", box_indices.shape().DebugString()));
  OP_REQUIRES(ctx, boxes.dim_size(0) <= INT32_MAX,
              InvalidArgument("roi_align: too many boxes: ", boxes.dim_size(0)));
  s->num_rois = static_cast<int>(boxes.dim_size(0));
  if (on_host) {
    const int* idx = box_indices.flat<int>().data();
    for (int k = 0; k < s->num_rois; ++k) {
      OP_REQUIRES(ctx, idx[k] >= 0 && idx[k] < batch,
                  InvalidArgument("roi_align: box_indices[", k, "] = ", idx[k],
                                              " is out of range [0, ", batch, ") of the features' batch"));
    }
  }
}

template <typename Device>
constexpr bool kOnHost = std::is_same<Device, CPUDevice>::value;

template <typename Device, typename T>
class RoiAlignOp : public tf::OpKernel {
 public:
  explicit RoiAlignOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_height", &pooled_h_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_width", &pooled_w_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &spatial_scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sampling_ratio", &sampling_ratio_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("aligned", &aligned_));
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& features = ctx->input(0);
    const tf::Tensor& boxes = ctx->input(1);
    const tf::Tensor& box_indices = ctx->input(2);
    OP_REQUIRES(ctx, features.dims() == 4,
                InvalidArgument("roi_align: features must be [N, H, W, C], got ",
                                            features.shape().DebugString()));
    for (int d = 0; d < 4; ++d) {
      OP_REQUIRES(ctx, features.dim_size(d) <= INT32_MAX,
                  InvalidArgument("roi_align: features dimension ", d, " is too large"));
    }
    Shape s{};
    s.batch = static_cast<int>(features.dim_size(0));
    s.height = static_cast<int>(features.dim_size(1));
    s.width = static_cast<int>(features.dim_size(2));
    s.channels = static_cast<int>(features.dim_size(3));
    s.pooled_h = pooled_h_;
    s.pooled_w = pooled_w_;
    s.sampling_ratio = sampling_ratio_;
    s.spatial_scale = spatial_scale_;
    s.aligned = aligned_;
    ValidateRois(ctx, boxes, box_indices, s.batch, kOnHost<Device>, &s);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, s.num_rois == 0 || (s.height > 0 && s.width > 0),
                InvalidArgument("roi_align: features have an empty spatial size ",
                                            features.shape().DebugString(), " but boxes were given"));
    tf::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tf::TensorShape({s.num_rois, s.pooled_h, s.pooled_w, s.channels}),
                                             &output));
    if (output->NumElements() == 0) return;
    Forward<Device, T>()(ctx, features.flat<T>().data(), boxes.flat<T>().data(), box_indices.flat<int>().data(), s,
                         output->flat<T>().data());
  }

 private:
  int pooled_h_, pooled_w_, sampling_ratio_;
  float spatial_scale_;
  bool aligned_;
};

template <typename Device, typename T>
class RoiAlignGradOp : public tf::OpKernel {
 public:
  explicit RoiAlignGradOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &spatial_scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sampling_ratio", &sampling_ratio_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("aligned", &aligned_));
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& grad = ctx->input(0);
    const tf::Tensor& boxes = ctx->input(1);
    const tf::Tensor& box_indices = ctx->input(2);
    const tf::Tensor& shape_tensor = ctx->input(3);
    OP_REQUIRES(ctx, shape_tensor.dims() == 1 && shape_tensor.NumElements() == 4,
                InvalidArgument("roi_align_grad: features_shape must be a vector of 4, got ",
                                            shape_tensor.shape().DebugString()));
    const auto dims = shape_tensor.vec<int>();
    for (int d = 0; d < 4; ++d) {
      OP_REQUIRES(ctx, dims(d) >= 0, InvalidArgument("roi_align_grad: negative features_shape"));
    }
    Shape s{};
    s.batch = dims(0);
    s.height = dims(1);
    s.width = dims(2);
    s.channels = dims(3);
    s.sampling_ratio = sampling_ratio_;
    s.spatial_scale = spatial_scale_;
    s.aligned = aligned_;
    ValidateRois(ctx, boxes, box_indices, s.batch, kOnHost<Device>, &s);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == s.num_rois && grad.dim_size(3) == s.channels,
                InvalidArgument("roi_align_grad: grad_output must be [K, ph, pw, C] = [", s.num_rois,
                                            ", ph, pw, ", s.channels, "], got ", grad.shape().DebugString()));
    s.pooled_h = static_cast<int>(grad.dim_size(1));
    s.pooled_w = static_cast<int>(grad.dim_size(2));
    tf::Tensor* grad_features = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tf::TensorShape({s.batch, s.height, s.width, s.channels}),
                                             &grad_features));
    if (grad_features->NumElements() == 0) return;
    Backward<Device, T>()(ctx, grad.flat<T>().data(), boxes.flat<T>().data(), box_indices.flat<int>().data(), s,
                          grad_features->flat<T>().data());
  }

 private:
  int sampling_ratio_;
  float spatial_scale_;
  bool aligned_;
};

#define REGISTER_CPU(T)                                                                            \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>RoiAlign").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"),   \
                          RoiAlignOp<CPUDevice, T>);                                               \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>RoiAlignGrad").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"), \
                          RoiAlignGradOp<CPUDevice, T>);
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
extern template struct Forward<GPUDevice, float>;
extern template struct Forward<GPUDevice, double>;
extern template struct Backward<GPUDevice, float>;
extern template struct Backward<GPUDevice, double>;

#define REGISTER_GPU(T)                                                                             \
  REGISTER_KERNEL_BUILDER(Name("Tfdet>RoiAlign").Device(tf::DEVICE_GPU).TypeConstraint<T>("T"),    \
                          RoiAlignOp<GPUDevice, T>);                                                \
  REGISTER_KERNEL_BUILDER(                                                                          \
      Name("Tfdet>RoiAlignGrad").Device(tf::DEVICE_GPU).TypeConstraint<T>("T").HostMemory("features_shape"), \
      RoiAlignGradOp<GPUDevice, T>);
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace roi_align
}  // namespace tfdet
