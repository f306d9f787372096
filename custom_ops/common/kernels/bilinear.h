// Bilinear sampling weights, framework-free and shared by CPU and CUDA kernels.
#ifndef TFDET_COMMON_KERNELS_BILINEAR_H_
#define TFDET_COMMON_KERNELS_BILINEAR_H_

#include <cmath>

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
// A NaN coordinate also returns false (the test is written so that NaN fails it): only coordinates in
// [-1, size] reach the int conversion, which is undefined for NaN and out-of-range values.
template <typename T>
TFDET_HOST_DEVICE bool clamped_bilinear_taps(T y, T x, int height, int width, BilinearTaps<T>* taps) {
  if (!(y >= T(-1) && y <= T(height) && x >= T(-1) && x <= T(width))) return false;
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

// Deformable-convolution sampling (torchvision.ops.deform_conv2d): the image is zero outside, so a
// sample with y <= -1, y >= height, x <= -1 or x >= width contributes nothing (returns false; so does a
// NaN coordinate, which fails the test below before any int conversion; callers that give NaN its own
// meaning test for it themselves) and a
// tap that falls off the map gets weight 0 (its index is set to 0, a safe address). When grad_y and
// grad_x are given they receive d weight[t] / dy and d weight[t] / dx of the four taps (0 for the
// taps that fall off the map), for gradients with respect to the sampling position.
template <typename T>
TFDET_HOST_DEVICE bool zero_padded_bilinear_taps(T y, T x, int height, int width, BilinearTaps<T>* taps,
                                                 T* grad_y = nullptr, T* grad_x = nullptr) {
  for (int t = 0; t < 4; ++t) {
    taps->index[t] = 0;
    taps->weight[t] = T(0);
    if (grad_y != nullptr) grad_y[t] = grad_x[t] = T(0);
  }
  if (!(y > T(-1) && y < T(height) && x > T(-1) && x < T(width))) return false;
  const T y_floor = floor(y), x_floor = floor(x);
  const int y_low = static_cast<int>(y_floor), x_low = static_cast<int>(x_floor);
  const T ly = y - y_floor, lx = x - x_floor;
  const T hy = T(1) - ly, hx = T(1) - lx;
  const T weight[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const T d_dy[4] = {-hx, -lx, hx, lx};
  const T d_dx[4] = {-hy, hy, -ly, ly};
  for (int t = 0; t < 4; ++t) {
    const int yy = y_low + (t >> 1), xx = x_low + (t & 1);
    if (yy < 0 || yy >= height || xx < 0 || xx >= width) continue;
    taps->index[t] = yy * width + xx;
    taps->weight[t] = weight[t];
    if (grad_y != nullptr) {
      grad_y[t] = d_dy[t];
      grad_x[t] = d_dx[t];
    }
  }
  return true;
}

}  // namespace tfdet

#endif  // TFDET_COMMON_KERNELS_BILINEAR_H_
