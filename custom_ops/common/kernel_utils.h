// Helpers for the OpKernels of every op (*_kernels.cc, *_kernels.cu.cc): input validation, CPU
// sharding, the CUDA launch check and kernel registration.
#ifndef TFDET_COMMON_KERNEL_UTILS_H_
#define TFDET_COMMON_KERNEL_UTILS_H_

#include <algorithm>
#include <climits>
#include <cstdint>
#include <functional>
#include <type_traits>

#include "custom_ops/common/op_utils.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace Eigen {
struct ThreadPoolDevice;
struct GpuDevice;
}  // namespace Eigen

namespace tfdet {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

// Whether the kernels of Device read their inputs in host memory (so values can be checked).
template <typename Device>
constexpr bool kOnHost = std::is_same<Device, CPUDevice>::value;

// ---------------------------------------------------------------------------------------------------
// Input validation in the OpKernels. `op` starts every message; the argument is named after it.

// `name` must be [N, H, W, C] with every dimension at most max_dim.
inline absl::Status ValidateNhwc(const char* op, const char* name, const tf::Tensor& t, int64_t max_dim) {
  if (t.dims() != 4) return InvalidArgument(op, ": ", name, " must be [N, H, W, C], got ", t.shape().DebugString());
  for (int d = 0; d < 4; ++d) {
    if (t.dim_size(d) > max_dim) return InvalidArgument(op, ": ", name, " dimension ", d, " is too large");
  }
  return absl::OkStatus();
}

// boxes must be [K, 4] and box_indices [K], K fitting an int.
inline absl::Status ValidateBoxes(const char* op, const tf::Tensor& boxes, const tf::Tensor& box_indices) {
  if (boxes.dims() != 2 || boxes.dim_size(1) != 4) {
    return InvalidArgument(op, ": boxes must have shape [K, 4], got ", boxes.shape().DebugString());
  }
  if (box_indices.dims() != 1 || box_indices.dim_size(0) != boxes.dim_size(0)) {
    return InvalidArgument(op, ": box_indices must have shape [K] = [", boxes.dim_size(0), "] to match boxes, got ",
                           box_indices.shape().DebugString());
  }
  if (boxes.dim_size(0) > INT_MAX) return InvalidArgument(op, ": too many boxes: ", boxes.dim_size(0));
  return absl::OkStatus();
}

// Every box index must lie in [0, batch). Reads the values: only for inputs in host memory.
inline absl::Status ValidateBoxIndices(const char* op, const tf::Tensor& box_indices, int batch) {
  const int* idx = box_indices.flat<int>().data();
  for (int64_t k = 0; k < box_indices.NumElements(); ++k) {
    if (idx[k] < 0 || idx[k] >= batch) {
      return InvalidArgument(op, ": box_indices[", k, "] = ", idx[k], " is out of range [0, ", batch,
                             ") of the features' batch");
    }
  }
  return absl::OkStatus();
}

// Boxes cannot be sampled from features without pixels.
inline absl::Status ValidateSpatialSizeForBoxes(const char* op, const tf::Tensor& features, int64_t num_rois) {
  if (num_rois > 0 && (features.dim_size(1) == 0 || features.dim_size(2) == 0)) {
    return InvalidArgument(op, ": features have an empty spatial size ", features.shape().DebugString(),
                           " but boxes were given");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------
// CPU functors: work split over the CPU device's thread pool.

inline int CpuThreads(tf::OpKernelContext* ctx) { return ctx->device()->tensorflow_cpu_worker_threads()->num_threads; }

// Runs work(begin, end) over ranges covering [0, total) on the thread pool; cost_per_unit is the
// estimated cost of one unit for tf::Shard's cost model.
inline void ShardOnCpu(tf::OpKernelContext* ctx, int64_t total, int64_t cost_per_unit,
                       std::function<void(int64_t, int64_t)> work) {
  const auto& pool = *ctx->device()->tensorflow_cpu_worker_threads();
  tf::Shard(pool.num_threads, pool.workers, total, cost_per_unit, std::move(work));
}

// Splits channels [0, channels) into at most max_blocks contiguous blocks of equal size (the last
// may be shorter) and runs work(c_begin, c_end) once per block on the thread pool; block_cost(size)
// estimates one block of `size` channels. Blocks that own their channels' addresses need no atomics,
// and the result does not depend on the number of threads.
template <typename Cost, typename Work>
void ShardChannelBlocks(tf::OpKernelContext* ctx, int channels, int max_blocks, Cost block_cost, Work work) {
  if (channels <= 0) return;
  const int blocks = std::min(channels, std::max(1, max_blocks));
  const int block = (channels + blocks - 1) / blocks;
  ShardOnCpu(ctx, (channels + block - 1) / block, block_cost(block), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int c_begin = static_cast<int>(b) * block;
      work(c_begin, std::min(channels, c_begin + block));
    }
  });
}

// Cost of one RoIAlign-style output bin over `channels` channels: its bilinear taps (a
// sampling_ratio^2 grid, or about 4 samples when adaptive) and their multiply-adds.
inline int64_t RoiBinCost(int sampling_ratio, int channels) {
  const int grid = sampling_ratio > 0 ? sampling_ratio * sampling_ratio : 4;
  return static_cast<int64_t>(grid) * (40 + 8LL * channels);
}

// ---------------------------------------------------------------------------------------------------
// GPU functors (files compiled by nvcc only).

#if defined(__CUDACC__)
// Returns whether a CUDA call (a kernel launch, a memset) succeeded; if not, fails ctx with
// "<op>: <what> failed: <CUDA's reason>".
inline bool CheckCuda(tf::OpKernelContext* ctx, const char* op, cudaError_t err, const char* what) {
  if (err == cudaSuccess) return true;
  ctx->SetStatus(absl::InternalError(absl::StrCat(op, ": ", what, " failed: ", cudaGetErrorString(err))));
  return false;
}
#endif  // __CUDACC__

}  // namespace tfdet

// ---------------------------------------------------------------------------------------------------
// Registration: registers OpClass<Device, float> and OpClass<Device, double> as the kernels of
// `builder`, a Name("Tfdet>...").Device(...) expression, constraining the op's type attribute T.
#define TFDET_REGISTER_FLOAT_KERNELS(builder, OpClass, Device)                          \
  REGISTER_KERNEL_BUILDER(builder.TypeConstraint<float>("T"), OpClass<Device, float>); \
  REGISTER_KERNEL_BUILDER(builder.TypeConstraint<double>("T"), OpClass<Device, double>)

#endif  // TFDET_COMMON_KERNEL_UTILS_H_
