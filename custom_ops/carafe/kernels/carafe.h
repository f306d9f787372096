// CARAFE reassembly math, framework-free (mmcv.ops.carafe semantics, NHWC layout).
//
//   features [N, H, W, C], masks [N, H*s, W*s, G*k*k]  ->  output [N, H*s, W*s, C]
//   output[n, y, x, c] = sum_{dy, dx < k} masks[n, y, x, g*k*k + dy*k + dx]
//                                         * features[n, y/s + dy - r, x/s + dx - r, c]
// with r = (k - 1) / 2, g = c / (C / G) (channel groups are contiguous blocks) and features outside
// the map read as zero. The CPU kernel (carafe_kernels.cc), the CUDA kernel (carafe_cuda.cuh) and any
// TF-free GPU harness call the per-pixel functions below, so they cannot disagree.
//
// Both gradients are written as gathers (every output element is owned by one caller), so neither
// the CPU nor the CUDA kernels need atomics and the results do not depend on the thread count.
#ifndef TFDET_CARAFE_KERNELS_CARAFE_H_
#define TFDET_CARAFE_KERNELS_CARAFE_H_

#include "custom_ops/common/kernels/dot.h"
#include "custom_ops/common/kernels/platform.h"

namespace tfdet {
namespace carafe {

struct Shape {
  int batch, height, width, channels;  // features [N, H, W, C]
  int kernel_size;                     // k (odd)
  int group_size;                      // G (divides C)
  int scale_factor;                    // s; masks and output are [N, H*s, W*s, .]

  TFDET_FORCE_INLINE int out_height() const { return height * scale_factor; }
  TFDET_FORCE_INLINE int out_width() const { return width * scale_factor; }
  TFDET_FORCE_INLINE int taps() const { return kernel_size * kernel_size; }
  TFDET_FORCE_INLINE int mask_channels() const { return group_size * kernel_size * kernel_size; }
  TFDET_FORCE_INLINE int group_channels() const { return channels / group_size; }
  // Flat pixel index of features[n, y, x] and of output/masks[n, y, x].
  TFDET_FORCE_INLINE long long in_pixel(int n, int y, int x) const {
    return (static_cast<long long>(n) * height + y) * width + x;
  }
  TFDET_FORCE_INLINE long long out_pixel(int n, int y, int x) const {
    return (static_cast<long long>(n) * out_height() + y) * out_width() + x;
  }
};

// The per-pixel functions below split their channel range into blocks that stay inside one channel
// group and hold B accumulators across all taps: B = 64, 32, 8, then 1 for the rest when the caller
// passes kMaxBlock = 64, as the CPU kernels do (the accumulators live in vector registers and each
// input row is read once per block); the CUDA kernels pass kMaxBlock = 1 (one channel per thread).

// out[c0 + j] = output[n, y, x, c0 + j] for j < B; `weights` = masks[n, y, x, g*k*k:], (cy, cx) = (y/s, x/s).
template <int B, typename T>
TFDET_FORCE_INLINE void forward_block(const T* features, const T* weights, const Shape& s, int n, int cy, int cx,
                                       int c0, T* out) {
  const int k = s.kernel_size, r = (k - 1) / 2;
  T acc[B];
  for (int j = 0; j < B; ++j) acc[j] = T(0);
  for (int dy = 0; dy < k; ++dy) {
    const int iy = cy + dy - r;
    if (iy < 0 || iy >= s.height) continue;
    for (int dx = 0; dx < k; ++dx) {
      const int ix = cx + dx - r;
      if (ix < 0 || ix >= s.width) continue;
      const T w = weights[dy * k + dx];
      const T* src = features + s.in_pixel(n, iy, ix) * s.channels + c0;
      for (int j = 0; j < B; ++j) acc[j] += w * src[j];
    }
  }
  for (int j = 0; j < B; ++j) out[c0 + j] = acc[j];
}

// out[c] = output[n, y, x, c] for c in [c_begin, c_end); `out` points at output[n, y, x, 0].
template <int kMaxBlock, typename T>
TFDET_FORCE_INLINE void forward_pixel(const T* features, const T* masks, const Shape& s, int n, int y, int x,
                                       int c_begin, int c_end, T* out) {
  if (c_begin >= c_end) return;  // also keeps C = 0 (group_channels() = 0) away from the division below
  const T* mask = masks + s.out_pixel(n, y, x) * s.mask_channels();
  const int cy = y / s.scale_factor, cx = x / s.scale_factor;
  const int cg = s.group_channels();
  for (int g = c_begin / cg; g * cg < c_end; ++g) {
    const T* weights = mask + g * s.taps();
    const int hi = min_of(c_end, (g + 1) * cg);
    int c0 = max_of(c_begin, g * cg);
    if (kMaxBlock >= 64) {
      for (; c0 + 64 <= hi; c0 += 64) forward_block<64>(features, weights, s, n, cy, cx, c0, out);
    }
    if (kMaxBlock >= 32) {
      for (; c0 + 32 <= hi; c0 += 32) forward_block<32>(features, weights, s, n, cy, cx, c0, out);
    }
    if (kMaxBlock >= 8) {
      for (; c0 + 8 <= hi; c0 += 8) forward_block<8>(features, weights, s, n, cy, cx, c0, out);
    }
    for (; c0 < hi; ++c0) forward_block<1>(features, weights, s, n, cy, cx, c0, out);
  }
}

// grad[c0 + j] for j < B, channels of group g: see backward_features_pixel.
template <int B, typename T>
TFDET_FORCE_INLINE void backward_features_block(const T* grad_output, const T* masks, const Shape& s, int n, int iy,
                                                 int ix, int g, int c0, T* grad) {
  const int k = s.kernel_size, r = (k - 1) / 2, sf = s.scale_factor;
  T acc[B];
  for (int j = 0; j < B; ++j) acc[j] = T(0);
  for (int dy = 0; dy < k; ++dy) {
    const int cy = iy - dy + r;
    if (cy < 0 || cy >= s.height) continue;
    for (int dx = 0; dx < k; ++dx) {
      const int cx = ix - dx + r;
      if (cx < 0 || cx >= s.width) continue;
      for (int a = 0; a < sf; ++a) {
        for (int b = 0; b < sf; ++b) {
          const long long p = s.out_pixel(n, cy * sf + a, cx * sf + b);
          const T w = masks[p * s.mask_channels() + g * s.taps() + dy * k + dx];
          const T* src = grad_output + p * s.channels + c0;
          for (int j = 0; j < B; ++j) acc[j] += w * src[j];
        }
      }
    }
  }
  for (int j = 0; j < B; ++j) grad[c0 + j] = acc[j];
}

// grad[c] = d loss / d features[n, iy, ix, c] for c in [c_begin, c_end): the sum over every output pixel
// whose neighbourhood holds (iy, ix). Tap (dy, dx) of the output pixels centred on input pixel
// (cy, cx) = (iy - dy + r, ix - dx + r) reads (iy, ix); those are the s x s pixels (cy*s + a, cx*s + b).
template <int kMaxBlock, typename T>
TFDET_FORCE_INLINE void backward_features_pixel(const T* grad_output, const T* masks, const Shape& s, int n, int iy,
                                                 int ix, int c_begin, int c_end, T* grad) {
  if (c_begin >= c_end) return;
  const int cg = s.group_channels();
  for (int g = c_begin / cg; g * cg < c_end; ++g) {
    const int hi = min_of(c_end, (g + 1) * cg);
    int c0 = max_of(c_begin, g * cg);
    if (kMaxBlock >= 64) {
      for (; c0 + 64 <= hi; c0 += 64) backward_features_block<64>(grad_output, masks, s, n, iy, ix, g, c0, grad);
    }
    if (kMaxBlock >= 32) {
      for (; c0 + 32 <= hi; c0 += 32) backward_features_block<32>(grad_output, masks, s, n, iy, ix, g, c0, grad);
    }
    if (kMaxBlock >= 8) {
      for (; c0 + 8 <= hi; c0 += 8) backward_features_block<8>(grad_output, masks, s, n, iy, ix, g, c0, grad);
    }
    for (; c0 < hi; ++c0) backward_features_block<1>(grad_output, masks, s, n, iy, ix, g, c0, grad);
  }
}

// d loss / d masks[n, y, x, m]: the dot product over the channels of group m / k^2 of the output's
// gradient at (y, x) and the features under tap m % k^2; zero for taps outside the map.
template <int kMaxBlock, typename T>
TFDET_FORCE_INLINE T backward_mask_value(const T* grad_output, const T* features, const Shape& s, int n, int y,
                                          int x, int m) {
  const int k = s.kernel_size, r = (k - 1) / 2;
  const int g = m / s.taps(), tap = m % s.taps();
  const int iy = y / s.scale_factor + tap / k - r, ix = x / s.scale_factor + tap % k - r;
  if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) return T(0);
  const int cg = s.group_channels();
  return dot<kMaxBlock>(grad_output + s.out_pixel(n, y, x) * s.channels + g * cg,
             features + s.in_pixel(n, iy, ix) * s.channels + g * cg, cg);
}

}  // namespace carafe
}  // namespace tfdet

#endif  // TFDET_CARAFE_KERNELS_CARAFE_H_
