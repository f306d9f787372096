// Deformable RoI pooling TF kernels: input validation, allocation, and the multithreaded CPU functors.
#define EIGEN_USE_THREADS

#include "custom_ops/deform_roi_pool/deform_roi_pool_kernels.h"

#include <algorithm>
#include <climits>

#include "custom_ops/common/kernel_utils.h"
#include "custom_ops/roi_align/roi_align_kernels.h"

namespace tfdet {
namespace deform_roi_pool {

template <typename T>
const T* bin_offset(const T* offsets, long long bin) {
  return offsets == nullptr ? nullptr : offsets + 2 * bin;
}

template <typename T>
void Forward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, T gamma, const T* features,
                                       const T* boxes, const int* box_indices, const T* offsets, T* output) {
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  const long long image_size = static_cast<long long>(s.height) * s.width * s.channels;
  auto work = [&](long long begin, long long end) {
    for (long long bin = begin; bin < end; ++bin) {
      const Bin b = unflatten_bin(bin, s);
      const int pw = b.pw, ph = b.ph, k = b.k;
      const RoiGrid<T> g = bin_grid(boxes + 4 * k, bin_offset(offsets, bin), gamma, s);
      roi_align::forward_bin(features + box_indices[k] * image_size, g, ph, pw, s, 0, s.channels,
                             output + bin * s.channels);
    }
  };
  ShardOnCpu(ctx, bins, RoiBinCost(s.sampling_ratio, s.channels), work);
}

// The features' gradient: threads own disjoint channel blocks (no two add to one address). The
// offsets' gradient: each bin is independent.
template <typename T>
void Backward<CPUDevice, T>::operator()(tf::OpKernelContext* ctx, const Shape& s, T gamma, const T* grad_output,
                                        const T* features, const T* boxes, const int* box_indices,
                                        const T* offsets, T* grad_features, T* grad_offsets) {
  const long long image_size = static_cast<long long>(s.height) * s.width * s.channels;
  const long long bins = static_cast<long long>(s.num_rois) * s.pooled_h * s.pooled_w;
  std::fill(grad_features, grad_features + s.batch * image_size, T(0));
  ShardChannelBlocks(
      ctx, s.channels, 4 * CpuThreads(ctx), [&](int block) { return bins * RoiBinCost(s.sampling_ratio, block); },
      [&](int c_begin, int c_end) {
        for (long long bin = 0; bin < bins; ++bin) {
          const Bin b = unflatten_bin(bin, s);
          const int pw = b.pw, ph = b.ph, k = b.k;
          const RoiGrid<T> g = bin_grid(boxes + 4 * k, bin_offset(offsets, bin), gamma, s);
          roi_align::backward_bin(grad_output + bin * s.channels, g, ph, pw, s, c_begin, c_end,
                                  grad_features + box_indices[k] * image_size);
        }
      });
  if (offsets == nullptr) return;
  ShardOnCpu(ctx, bins, 2 * RoiBinCost(s.sampling_ratio, s.channels), [&](long long begin, long long end) {
    for (long long bin = begin; bin < end; ++bin) {
      const Bin b = unflatten_bin(bin, s);
      const int pw = b.pw, ph = b.ph, k = b.k;
      const RoiGrid<T> g = bin_grid(boxes + 4 * k, offsets + 2 * bin, gamma, s);
      offset_grad_bin(features + box_indices[k] * image_size, g, ph, pw, gamma, s, 0, s.channels,
                      grad_output + bin * s.channels, grad_offsets + 2 * bin);
    }
  });
}

// Checks shared by the forward and gradient kernels; fills *s (all but pooled_h / pooled_w).
inline absl::Status validate(const tf::Tensor& features, const tf::Tensor& boxes, const tf::Tensor& box_indices,
                           bool on_host, Shape* s) {
  TF_RETURN_IF_ERROR(ValidateNhwc("deform_roi_pool", "features", features, INT_MAX / 4));
  TF_RETURN_IF_ERROR(ValidateBoxes("deform_roi_pool", boxes, box_indices));
  s->batch = static_cast<int>(features.dim_size(0));
  s->height = static_cast<int>(features.dim_size(1));
  s->width = static_cast<int>(features.dim_size(2));
  s->channels = static_cast<int>(features.dim_size(3));
  s->num_rois = static_cast<int>(boxes.dim_size(0));
  s->aligned = true;
  TF_RETURN_IF_ERROR(ValidateSpatialSizeForBoxes("deform_roi_pool", features, s->num_rois));
  return on_host ? ValidateBoxIndices("deform_roi_pool", box_indices, s->batch) : absl::OkStatus();
}

inline absl::Status validate_offsets(const tf::Tensor& offsets, const Shape& s) {
  if (offsets.dims() != 4 || offsets.dim_size(0) != s.num_rois || offsets.dim_size(1) != s.pooled_h ||
      offsets.dim_size(2) != s.pooled_w || offsets.dim_size(3) != 2) {
    return InvalidArgument("deform_roi_pool: offsets must be [K, ph, pw, 2] = [", s.num_rois, ", ",
                                       s.pooled_h, ", ", s.pooled_w, ", 2], got ", offsets.shape().DebugString());
  }
  return absl::OkStatus();
}

template <typename Device, typename T>
class DeformRoiPoolOp : public tf::OpKernel {
 public:
  explicit DeformRoiPoolOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_height", &pooled_h_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_width", &pooled_w_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &spatial_scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sampling_ratio", &sampling_ratio_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gamma", &gamma_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_offsets", &has_offsets_));
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& features = ctx->input(0);
    Shape s{};
    OP_REQUIRES_OK(ctx, validate(features, ctx->input(1), ctx->input(2), kOnHost<Device>, &s));
    s.pooled_h = pooled_h_, s.pooled_w = pooled_w_;
    s.sampling_ratio = sampling_ratio_, s.spatial_scale = spatial_scale_;
    if (has_offsets_) OP_REQUIRES_OK(ctx, validate_offsets(ctx->input(3), s));
    OP_REQUIRES_OK(ctx, roi_align::ValidateSamplingGrid<T>("deform_roi_pool", s, ctx->input(1), kOnHost<Device>));
    tf::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tf::TensorShape({s.num_rois, s.pooled_h, s.pooled_w, s.channels}),
                                             &output));
    if (output->NumElements() == 0) return;
    Forward<Device, T>()(ctx, s, static_cast<T>(gamma_), features.flat<T>().data(), ctx->input(1).flat<T>().data(),
                         ctx->input(2).flat<int>().data(), has_offsets_ ? ctx->input(3).flat<T>().data() : nullptr,
                         output->flat<T>().data());
  }

 private:
  int pooled_h_, pooled_w_, sampling_ratio_;
  float spatial_scale_, gamma_;
  bool has_offsets_;
};

template <typename Device, typename T>
class DeformRoiPoolGradOp : public tf::OpKernel {
 public:
  explicit DeformRoiPoolGradOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &spatial_scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sampling_ratio", &sampling_ratio_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gamma", &gamma_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_offsets", &has_offsets_));
  }

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& grad = ctx->input(0);
    const tf::Tensor& features = ctx->input(1);
    Shape s{};
    OP_REQUIRES_OK(ctx, validate(features, ctx->input(2), ctx->input(3), kOnHost<Device>, &s));
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == s.num_rois && grad.dim_size(3) == s.channels &&
                         grad.dim_size(1) >= 1 && grad.dim_size(2) >= 1,
                InvalidArgument("deform_roi_pool_grad: grad_output must be [K, ph, pw, C] = [", s.num_rois,
                                            ", ph, pw, ", s.channels, "], got ", grad.shape().DebugString()));
    s.pooled_h = static_cast<int>(grad.dim_size(1)), s.pooled_w = static_cast<int>(grad.dim_size(2));
    s.sampling_ratio = sampling_ratio_, s.spatial_scale = spatial_scale_;
    if (has_offsets_) OP_REQUIRES_OK(ctx, validate_offsets(ctx->input(4), s));
    OP_REQUIRES_OK(ctx,
                   roi_align::ValidateSamplingGrid<T>("deform_roi_pool_grad", s, ctx->input(2), kOnHost<Device>));
    tf::Tensor *grad_features = nullptr, *grad_offsets = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, has_offsets_ ? ctx->input(4).shape() : tf::TensorShape({0}),
                                             &grad_offsets));
    if (grad_features->NumElements() == 0 && grad_offsets->NumElements() == 0) return;
    Backward<Device, T>()(ctx, s, static_cast<T>(gamma_), grad.flat<T>().data(), features.flat<T>().data(),
                          ctx->input(2).flat<T>().data(), ctx->input(3).flat<int>().data(),
                          has_offsets_ ? ctx->input(4).flat<T>().data() : nullptr, grad_features->flat<T>().data(),
                          has_offsets_ ? grad_offsets->flat<T>().data() : nullptr);
  }

 private:
  int sampling_ratio_;
  float spatial_scale_, gamma_;
  bool has_offsets_;
};

TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformRoiPool").Device(tf::DEVICE_CPU), DeformRoiPoolOp, CPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformRoiPoolGrad").Device(tf::DEVICE_CPU), DeformRoiPoolGradOp, CPUDevice);
#if GOOGLE_CUDA
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformRoiPool").Device(tf::DEVICE_GPU), DeformRoiPoolOp, GPUDevice);
TFDET_REGISTER_FLOAT_KERNELS(Name("Tfdet>DeformRoiPoolGrad").Device(tf::DEVICE_GPU), DeformRoiPoolGradOp, GPUDevice);
#endif  // GOOGLE_CUDA

}  // namespace deform_roi_pool
}  // namespace tfdet
