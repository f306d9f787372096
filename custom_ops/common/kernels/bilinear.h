// Bilinear sampling weights, framework-free and shared by CPU and CUDA kernels.
#ifndef TFDET_COMMON_KERNELS_BILINEAR_H_
#define TFDET_COMMON_KERNELS_BILINEAR_H_

#include "custom_ops/common/kernels/platform.h"

namespace tfdet {

// The four taps of one bilinear sample: flat pixel indices (y * width + x) and their weights.
template <typename T>
struct BilinearTaps {
  int index[4];
  T weight[4];
};

// RoIAlign-style sampling (torchvision.ops.roi_align): a sample with y < -1, y > height, x < -1 or
// x > width contributes nothing (returns false); otherwise coordinates in [-1, 0] clamp to the first
// row/column and coordinates past the last row/column clamp to it, so the taps never leave the map.
template <typename T>
TFDET_HOST_DEVICE bool clamped_bilinear_taps(T y, T x, int height, int width, BilinearTaps<T>* taps) {
  if (y < T(-1) || y > T(height) || x < T(-1) || x > T(width)) return false;
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  int y_low = static_cast<int>(y);
  int x_low = static_cast<int>(x);
  int y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - static_cast<T>(y_low), lx = x - static_cast<T>(x_low);
  const T hy = T(1) - ly, hx = T(1) - lx;
  taps->index[0] = y_low * width + x_low;
  taps->index[1] = y_low * width + x_high;
  taps->index[2] = y_high * width + x_low;
  taps->index[3] = y_high * width + x_high;
  taps->weight[0] = hy * hx;
  taps->weight[1] = hy * lx;
  taps->weight[2] = ly * hx;
  taps->weight[3] = ly * lx;
  return true;
}

}  // namespace tfdet

#endif  // TFDET_COMMON_KERNELS_BILINEAR_H_
