// Deformable RoI pooling math, framework-free (mmcv DeformRoIPool semantics, NHWC layout).
//
// Bin (ph, pw) of RoI k is the RoIAlign bin (always half-pixel aligned, clamped bilinear sampling)
// moved by (gamma * roi_width * offsets[k, ph, pw, 0], gamma * roi_height * offsets[k, ph, pw, 1]).
// The sampling and the features' gradient are RoIAlign's own (roi_align.h) on the moved grid; this
// header adds the grid shift and the gradient with respect to the offsets.
#ifndef TFDET_DEFORM_ROI_POOL_KERNELS_DEFORM_ROI_POOL_H_
#define TFDET_DEFORM_ROI_POOL_KERNELS_DEFORM_ROI_POOL_H_

#include "custom_ops/common/kernels/bilinear.h"
#include "custom_ops/common/kernels/platform.h"
#include "custom_ops/roi_align/kernels/roi_align.h"

namespace tfdet {
namespace deform_roi_pool {

using roi_align::Bin;
using roi_align::RoiGrid;
using roi_align::unflatten_bin;
using roi_align::Shape;  // with aligned = true

// The sampling grid of bin (ph, pw) of the RoI `box`, moved by its offset (`offset` points at
// offsets[k, ph, pw, 0], or is null for no offsets). Non-finite values: a box that is not finite makes
// every bin NaN (roi_align::make_grid); a bin moved to a NaN position is NaN too (not `defined`, no
// samples, no gradient); a bin moved to +-infinity lies outside the map: 0, and zero gradients.
template <typename T>
TFDET_HOST_DEVICE RoiGrid<T> bin_grid(const T* box, const T* offset, T gamma, const Shape& s) {
  RoiGrid<T> g = roi_align::make_grid(box, s);
  if (offset != nullptr && g.defined) {
    g.x0 += gamma * g.bin_w * static_cast<T>(s.pooled_w) * offset[0];
    g.y0 += gamma * g.bin_h * static_cast<T>(s.pooled_h) * offset[1];
    if (is_nan(g.x0) || is_nan(g.y0)) {
      g.defined = false;
      g.grid_h = g.grid_w = 0;
    }
  }
  return g;
}

// d out[c] / d offset (x then y) of bin (ph, pw), contracted with grad_out over channels
// [c_begin, c_end): returns sum_c grad_out[c] * d out[c] / d offset_x in grad[0] and likewise y in
// grad[1]. The derivative is that of the clamped sampling: zero along an axis where the sample is
// clamped to the border (or dropped outside the map).
template <typename T>
TFDET_HOST_DEVICE void offset_grad_bin(const T* image, const RoiGrid<T>& g, int ph, int pw, T gamma, const Shape& s,
                                       int c_begin, int c_end, const T* grad_out, T* grad) {
  T sum_x = T(0), sum_y = T(0);
  BilinearTaps<T> taps;
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const T y = g.y0 + ph * g.bin_h + (iy + T(0.5)) * g.bin_h / static_cast<T>(g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const T x = g.x0 + pw * g.bin_w + (ix + T(0.5)) * g.bin_w / static_cast<T>(g.grid_w);
      if (!clamped_bilinear_taps(y, x, s.height, s.width, &taps)) continue;
      const bool free_y = y > T(0) && y < static_cast<T>(s.height - 1);
      const bool free_x = x > T(0) && x < static_cast<T>(s.width - 1);
      if (!free_x && !free_y) continue;
      const T hy = taps.weight[0] + taps.weight[1], ly = taps.weight[2] + taps.weight[3];
      const T hx = taps.weight[0] + taps.weight[2], lx = taps.weight[1] + taps.weight[3];
      const T dx[4] = {-hy, hy, -ly, ly};
      const T dy[4] = {-hx, -lx, hx, lx};
      for (int t = 0; t < 4; ++t) {
        const T* src = image + static_cast<long long>(taps.index[t]) * s.channels;
        T dot = T(0);
        for (int c = c_begin; c < c_end; ++c) dot += grad_out[c] * src[c];
        if (free_x) sum_x += dx[t] * dot;
        if (free_y) sum_y += dy[t] * dot;
      }
    }
  }
  grad[0] = gamma * g.bin_w * static_cast<T>(s.pooled_w) * g.inv_count * sum_x;
  grad[1] = gamma * g.bin_h * static_cast<T>(s.pooled_h) * g.inv_count * sum_y;
}

}  // namespace deform_roi_pool
}  // namespace tfdet

#endif  // TFDET_DEFORM_ROI_POOL_KERNELS_DEFORM_ROI_POOL_H_
