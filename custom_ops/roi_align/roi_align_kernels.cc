// RoIAlign TF kernels: input validation, allocation, and the multithreaded CPU functors.
#define EIGEN_USE_THREADS

#include "custom_ops/roi_align/roi_align_kernels.h"

#include <algorithm>

#include "custom_ops/common/kernel_utils.h"

namespace tfdet {
namespace roi_align {

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
  ShardOnCpu(ctx, bins, RoiBinCost(s.sampling_ratio, s.channels), work);
}

// Threads own disjoint channel blocks, so scatter-adds never race and the result does not depend on
// the number of threads.
template <typename T>
void Backward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const T* grad_output, const T* boxes,
                                        const int* box_indices, const Shape& s, T* grad_features) {
  const long long image_size = static_cast<long long>(s.height) * s.width * s.channels;
  ShardOnCpu(ctx, s.batch * image_size, 1,
             [&](long long begin, long long end) { std::fill(grad_features + begin, grad_features + end, T(0)); });
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  ShardChannelBlocks(
      ctx, s.channels, CpuThreads(ctx), [&](int block) { return bins * RoiBinCost(s.sampling_ratio, block); },
      [&](int c_begin, int c_end) {
        for (long long bin = 0; bin < bins; ++bin) {
          const Bin b = unflatten_bin(bin, s);
          const RoiGrid<T> g = make_grid(boxes + 4 * b.k, s);
          backward_bin(grad_output + bin * s.channels, g, b.ph, b.pw, s, c_begin, c_end,
                       grad_features + box_indices[b.k] * image_size);
        }
      });
}

// Checks shared by the forward and backward kernels; sets s->num_rois.
inline absl::Status ValidateRois(const tf::Tensor& boxes, const tf::Tensor& box_indices, int batch, bool on_host,
                               Shape* s) {
  TF_RETURN_IF_ERROR(ValidateBoxes("roi_align", boxes, box_indices));
  s->num_rois = static_cast<int>(boxes.dim_size(0));
  return on_host ? ValidateBoxIndices("roi_align", box_indices, batch) : absl::OkStatus();
}

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
    OP_REQUIRES_OK(ctx, ValidateNhwc("roi_align", "features", features, INT32_MAX));
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
    OP_REQUIRES_OK(ctx, ValidateRois(boxes, box_indices, s.batch, kOnHost<Device>, &s));
    OP_REQUIRES_OK(ctx, ValidateSpatialSizeForBoxes("roi_align", features, s.num_rois));
    OP_REQUIRES_OK(ctx, ValidateSamplingGrid<T>("roi_align", s, boxes, kOnHost<Device>));
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
    OP_REQUIRES_OK(ctx, ValidateRois(boxes, box_indices, s.batch, kOnHost<Device>, &s));
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == s.num_rois && grad.dim_size(3) == s.channels,
                InvalidArgument("roi_align_grad: grad_output must be [K, ph, pw, C] = [", s.num_rois,
                                            ", ph, pw, ", s.channels, "], got ", grad.shape().DebugString()));
    s.pooled_h = static_cast<int>(grad.dim_size(1));
    s.pooled_w = static_cast<int>(grad.dim_size(2));
    OP_REQUIRES(ctx, s.pooled_h >= 1 && s.pooled_w >= 1,
                InvalidArgument("roi_align_grad: grad_output must have a pooled size of at least 1x1, got ",
                                grad.shape().DebugString()));
    OP_REQUIRES_OK(ctx, ValidateSamplingGrid<T>("roi_align_grad", s, boxes, kOnHost<Device>));
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

TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>RoiAlign").Device(tf::DEVICE_CPU), RoiAlignOp, CPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>RoiAlignGrad").Device(tf::DEVICE_CPU), RoiAlignGradOp, CPUDevice);
#if GOOGLE_CUDA
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>RoiAlign").Device(tf::DEVICE_GPU), RoiAlignOp, GPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>RoiAlignGrad").Device(tf::DEVICE_GPU).HostMemory("features_shape"),
                             RoiAlignGradOp, GPUDevice);
#endif  // GOOGLE_CUDA

}  // namespace roi_align
}  // namespace tfdet
