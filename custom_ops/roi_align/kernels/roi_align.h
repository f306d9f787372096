// RoIAlign math, framework-free (torchvision.ops.roi_align semantics, NHWC layout).
//
// The CPU kernel (roi_align_kernels.cc), the CUDA kernel (roi_align_cuda.cuh) and the TF-free GPU
// test harness (tests/gpu/) all call the per-bin functions below, so the three cannot disagree.
#ifndef TFDET_ROI_ALIGN_KERNELS_ROI_ALIGN_H_
#define TFDET_ROI_ALIGN_KERNELS_ROI_ALIGN_H_

#include <cmath>

#include "custom_ops/common/kernels/bilinear.h"
#include "custom_ops/common/kernels/platform.h"

namespace tfdet {
namespace roi_align {

struct Shape {
  int batch, height, width, channels;  // features [N, H, W, C]
  int num_rois, pooled_h, pooled_w;     // output   [K, ph, pw, C]
  int sampling_ratio;                   // > 0: fixed grid per bin; 0: ceil(roi / pooled)
  float spatial_scale;
  bool aligned;                         // half-pixel shift of the box corners
};

// The sampling grid of a bin has at most grid_limit(map side, output side) samples per side:
// max(64, ceil(4 * map side / output side)). Every box up to 4 times the map's size meets it with the
// adaptive grid (sampling_ratio = 0), and so does every sampling_ratio <= 64. (It is also at most 2^20,
// far beyond any feature map, which keeps the sample counts in range.) The OpKernels reject larger grids
// before any work (ValidateSamplingGrid in roi_align_kernels.h); make_grid clamps to the limit as well,
// so that the work per bin stays bounded even for inputs that were not validated (boxes in GPU memory).
constexpr int kGridLimitFloor = 64;
constexpr int kGridLimitMapFactor = 4;

TFDET_HOST_DEVICE int grid_limit(int map_side, int pooled_side) {
  const long long cells = (static_cast<long long>(kGridLimitMapFactor) * map_side + pooled_side - 1) / pooled_side;
  return static_cast<int>(cells > kGridLimitFloor ? min_of(cells, 1LL << 20) : kGridLimitFloor);
}

// ceil(roi_side / pooled_side), the adaptive grid, in T (it may be far beyond int); 0 for an empty or
// negative side.
template <typename T>
TFDET_HOST_DEVICE T adaptive_grid_cells(T roi_side, int pooled_side) {
  return max_of(ceil(roi_side / static_cast<T>(pooled_side)), T(0));
}

// Where the samples of one RoI lie: bin (ph, pw) averages the grid_h x grid_w points
// (y0 + ph * bin_h + (iy + .5) * bin_h / grid_h, x0 + pw * bin_w + (ix + .5) * bin_w / grid_w).
// A box with a NaN or infinite coordinate (after spatial_scale), or an infinite width or height, is not
// `defined`: its bins are NaN and it has no samples (so it passes no gradient to the features).
template <typename T>
struct RoiGrid {
  T y0, x0, bin_h, bin_w;
  int grid_h, grid_w;
  T inv_count;  // 1 / max(grid_h * grid_w, 1)
  bool defined;  // false: every bin is NaN
};

// The box's scaled corners (x1, y1, x2, y2) on the feature map; whether they and the box's size are finite.
template <typename T>
TFDET_HOST_DEVICE bool scaled_box(const T* box, const Shape& s, T* corners) {
  const T scale = static_cast<T>(s.spatial_scale);
  const T offset = s.aligned ? T(0.5) : T(0);
  for (int i = 0; i < 4; ++i) corners[i] = box[i] * scale - offset;
  return is_finite(corners[0]) && is_finite(corners[1]) && is_finite(corners[2]) && is_finite(corners[3]) &&
         is_finite(corners[2] - corners[0]) && is_finite(corners[3] - corners[1]);
}

// The height and width of a box with scaled corners c (legacy mode, aligned = false, makes malformed
// boxes 1x1).
template <typename T>
TFDET_HOST_DEVICE void roi_sides(const T* c, const Shape& s, T* roi_h, T* roi_w) {
  *roi_h = s.aligned ? c[3] - c[1] : max_of(c[3] - c[1], T(1));
  *roi_w = s.aligned ? c[2] - c[0] : max_of(c[2] - c[0], T(1));
}

template <typename T>
TFDET_HOST_DEVICE RoiGrid<T> make_grid(const T* box, const Shape& s) {
  RoiGrid<T> g;
  T c[4];
  g.defined = scaled_box(box, s, c);
  if (!g.defined) {
    g.y0 = g.x0 = g.bin_h = g.bin_w = T(0);
    g.grid_h = g.grid_w = 0;
    g.inv_count = T(1);
    return g;
  }
  T roi_h, roi_w;
  roi_sides(c, s, &roi_h, &roi_w);
  g.y0 = c[1];
  g.x0 = c[0];
  g.bin_h = roi_h / static_cast<T>(s.pooled_h);
  g.bin_w = roi_w / static_cast<T>(s.pooled_w);
  const int limit_h = grid_limit(s.height, s.pooled_h), limit_w = grid_limit(s.width, s.pooled_w);
  if (s.sampling_ratio > 0) {
    g.grid_h = min_of(s.sampling_ratio, limit_h);
    g.grid_w = min_of(s.sampling_ratio, limit_w);
  } else {
    g.grid_h = static_cast<int>(min_of(adaptive_grid_cells(roi_h, s.pooled_h), static_cast<T>(limit_h)));
    g.grid_w = static_cast<int>(min_of(adaptive_grid_cells(roi_w, s.pooled_w), static_cast<T>(limit_w)));
  }
  g.inv_count = T(1) / static_cast<T>(max_of(static_cast<long long>(g.grid_h) * g.grid_w, 1LL));
  return g;
}

// Host-side check of the adaptive grids (sampling_ratio = 0) before any work: the index of the first
// box whose grid exceeds grid_limit, with that grid in *cells_h x *cells_w, or -1 when none does.
// Boxes that are not finite have no grid and never exceed it.
template <typename T>
long long first_box_over_grid_limit(const T* boxes, const Shape& s, T* cells_h, T* cells_w) {
  if (s.sampling_ratio > 0) return -1;
  const T limit_h = static_cast<T>(grid_limit(s.height, s.pooled_h));
  const T limit_w = static_cast<T>(grid_limit(s.width, s.pooled_w));
  for (long long k = 0; k < s.num_rois; ++k) {
    T c[4], roi_h, roi_w;
    if (!scaled_box(boxes + 4 * k, s, c)) continue;
    roi_sides(c, s, &roi_h, &roi_w);
    *cells_h = adaptive_grid_cells(roi_h, s.pooled_h);
    *cells_w = adaptive_grid_cells(roi_w, s.pooled_w);
    if (*cells_h > limit_h || *cells_w > limit_w) return k;
  }
  return -1;
}

// Position of output bin `bin` (the flat index of output[k, ph, pw, :]).
struct Bin {
  int k, ph, pw;
};

TFDET_HOST_DEVICE Bin unflatten_bin(long long bin, const Shape& s) {
  Bin b;
  b.pw = static_cast<int>(bin % s.pooled_w);
  b.ph = static_cast<int>((bin / s.pooled_w) % s.pooled_h);
  b.k = static_cast<int>(bin / (static_cast<long long>(s.pooled_w) * s.pooled_h));
  return b;
}

// Calls fn(taps, scale) for each sample of bin (ph, pw) that lies on the map; `scale` is the weight
// of the sample in the bin's average.
template <typename T, typename Fn>
TFDET_HOST_DEVICE void for_each_sample(const RoiGrid<T>& g, int ph, int pw, const Shape& s, Fn&& fn) {
  BilinearTaps<T> taps;
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const T y = g.y0 + ph * g.bin_h + (iy + T(0.5)) * g.bin_h / static_cast<T>(g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const T x = g.x0 + pw * g.bin_w + (ix + T(0.5)) * g.bin_w / static_cast<T>(g.grid_w);
      if (clamped_bilinear_taps(y, x, s.height, s.width, &taps)) fn(taps, g.inv_count);
    }
  }
}

// Output bin (ph, pw) of one RoI for channels [c_begin, c_end): out[c] for c in that range (NaN for a
// box that is not `defined`). `image` points at features[n] (H * W * C values); `out` at output[k, ph, pw, 0].
template <typename T>
TFDET_HOST_DEVICE void forward_bin(const T* image, const RoiGrid<T>& g, int ph, int pw, const Shape& s,
                                   int c_begin, int c_end, T* out) {
  const T init = g.defined ? T(0) : quiet_nan<T>();
  for (int c = c_begin; c < c_end; ++c) out[c] = init;
  const long long C = s.channels;
  for_each_sample(g, ph, pw, s, [&](const BilinearTaps<T>& t, T scale) {
    const T w0 = t.weight[0] * scale, w1 = t.weight[1] * scale, w2 = t.weight[2] * scale, w3 = t.weight[3] * scale;
    const T *s0 = image + t.index[0] * C, *s1 = image + t.index[1] * C;
    const T *s2 = image + t.index[2] * C, *s3 = image + t.index[3] * C;
    for (int c = c_begin; c < c_end; ++c) out[c] += w0 * s0[c] + w1 * s1[c] + w2 * s2[c] + w3 * s3[c];
  });
}

// Adjoint of forward_bin: scatters grad_out[c] (grad_output[k, ph, pw, c]) into the image's gradient.
template <typename T>
TFDET_HOST_DEVICE void backward_bin(const T* grad_out, const RoiGrid<T>& g, int ph, int pw, const Shape& s,
                                    int c_begin, int c_end, T* grad_image) {
  const long long C = s.channels;
  for_each_sample(g, ph, pw, s, [&](const BilinearTaps<T>& t, T scale) {
    for (int i = 0; i < 4; ++i) {
      const T w = t.weight[i] * scale;
      T* dst = grad_image + t.index[i] * C;
      for (int c = c_begin; c < c_end; ++c) accumulate(dst + c, w * grad_out[c]);
    }
  });
}

}  // namespace roi_align
}  // namespace tfdet

#endif  // TFDET_ROI_ALIGN_KERNELS_ROI_ALIGN_H_
