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

#include "custom_ops/common/kernels/platform.h"

namespace tfdet {
namespace carafe {

struct Shape {
  int batch, height, width, channels;  // features [N, H, W, C]
  int kernel_size;                     // k (odd)
  int group_size;                      // G (divides C)
  int scale_factor;                    // s; masks and output are [N, H*s, W*s, .]

  TFDET_HOST_DEVICE int out_height() const { return height * scale_factor; }
  TFDET_HOST_DEVICE int out_width() const { return width * scale_factor; }
  TFDET_HOST_DEVICE int taps() const { return kernel_size * kernel_size; }
  TFDET_HOST_DEVICE int mask_channels() const { return group_size * kernel_size * kernel_size; }
  TFDET_HOST_DEVICE int group_channels() const { return channels / group_size; }
  // Flat pixel index of features[n, y, x] and of output/masks[n, y, x].
  TFDET_HOST_DEVICE long long in_pixel(int n, int y, int x) const {
    return (static_cast<long long>(n) * height + y) * width + x;
  }
  TFDET_HOST_DEVICE long long out_pixel(int n, int y, int x) const {
    return (static_cast<long long>(n) * out_height() + y) * out_width() + x;
  }
};

// dst[c] += w * src[c] for the channels [c_begin, c_end) of each group g, w = weights[g * taps].
template <typename T>
TFDET_HOST_DEVICE void grouped_axpy(const T* weights, int taps, const T* src, const Shape& s, int c_begin,
                                    int c_end, T* dst) {
  const int cg = s.group_channels();
  for (int g = c_begin / cg; g * cg < c_end; ++g) {
    const T w = weights[g * taps];
    const int lo = max_of(c_begin, g * cg), hi = min_of(c_end, (g + 1) * cg);
    for (int c = lo; c < hi; ++c) dst[c] += w * src[c];
  }
}

// out[c] = output[n, y, x, c] for c in [c_begin, c_end); `out` points at output[n, y, x, 0].
template <typename T>
TFDET_HOST_DEVICE void forward_pixel(const T* features, const T* masks, const Shape& s, int n, int y, int x,
                                     int c_begin, int c_end, T* out) {
  const int k = s.kernel_size, r = (k - 1) / 2;
  const int cy = y / s.scale_factor, cx = x / s.scale_factor;
  const T* mask = masks + s.out_pixel(n, y, x) * s.mask_channels();
  for (int c = c_begin; c < c_end; ++c) out[c] = T(0);
  for (int dy = 0; dy < k; ++dy) {
    const int iy = cy + dy - r;
    if (iy < 0 || iy >= s.height) continue;
    for (int dx = 0; dx < k; ++dx) {
      const int ix = cx + dx - r;
      if (ix < 0 || ix >= s.width) continue;
      grouped_axpy(mask + dy * k + dx, s.taps(), features + s.in_pixel(n, iy, ix) * s.channels, s, c_begin, c_end,
                   out);
    }
  }
}

// grad[c] = d loss / d features[n, iy, ix, c] for c in [c_begin, c_end): the sum over every output pixel
// whose neighbourhood holds (iy, ix). Tap (dy, dx) of the output pixels centred on input pixel
// (cy, cx) = (iy - dy + r, ix - dx + r) reads (iy, ix); those are the s x s pixels (cy*s + a, cx*s + b).
template <typename T>
TFDET_HOST_DEVICE void backward_features_pixel(const T* grad_output, const T* masks, const Shape& s, int n, int iy,
                                               int ix, int c_begin, int c_end, T* grad) {
  const int k = s.kernel_size, r = (k - 1) / 2, sf = s.scale_factor;
  for (int c = c_begin; c < c_end; ++c) grad[c] = T(0);
  for (int dy = 0; dy < k; ++dy) {
    const int cy = iy - dy + r;
    if (cy < 0 || cy >= s.height) continue;
    for (int dx = 0; dx < k; ++dx) {
      const int cx = ix - dx + r;
      if (cx < 0 || cx >= s.width) continue;
      for (int a = 0; a < sf; ++a) {
        for (int b = 0; b < sf; ++b) {
          const long long p = s.out_pixel(n, cy * sf + a, cx * sf + b);
          grouped_axpy(masks + p * s.mask_channels() + dy * k + dx, s.taps(), grad_output + p * s.channels, s,
                       c_begin, c_end, grad);
        }
      }
    }
  }
}

// sum_{c < len} a[c] * b[c] with four partial sums (independent chains; vectorizable on the host).
template <typename T>
TFDET_HOST_DEVICE T dot(const T* a, const T* b, int len) {
  T acc[4] = {T(0), T(0), T(0), T(0)};
  int c = 0;
  for (; c + 4 <= len; c += 4) {
    for (int j = 0; j < 4; ++j) acc[j] += a[c + j] * b[c + j];
  }
  for (; c < len; ++c) acc[0] += a[c] * b[c];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// d loss / d masks[n, y, x, m]: the dot product over the channels of group m / k^2 of the output's
// gradient at (y, x) and the features under tap m % k^2; zero for taps outside the map.
template <typename T>
TFDET_HOST_DEVICE T backward_mask_value(const T* grad_output, const T* features, const Shape& s, int n, int y, int x,
                                        int m) {
  const int k = s.kernel_size, r = (k - 1) / 2;
  const int g = m / s.taps(), tap = m % s.taps();
  const int iy = y / s.scale_factor + tap / k - r, ix = x / s.scale_factor + tap % k - r;
  if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) return T(0);
  const int cg = s.group_channels();
  return dot(grad_output + s.out_pixel(n, y, x) * s.channels + g * cg,
             features + s.in_pixel(n, iy, ix) * s.channels + g * cg, cg);
}

}  // namespace carafe
}  // namespace tfdet

#endif  // TFDET_CARAFE_KERNELS_CARAFE_H_
