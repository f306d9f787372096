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

// Where the samples of one RoI lie: bin (ph, pw) averages the grid_h x grid_w points
// (y0 + ph * bin_h + (iy + .5) * bin_h / grid_h, x0 + pw * bin_w + (ix + .5) * bin_w / grid_w).
template <typename T>
struct RoiGrid {
  T y0, x0, bin_h, bin_w;
  int grid_h, grid_w;
  T inv_count;  // 1 / max(grid_h * grid_w, 1)
};

template <typename T>
TFDET_HOST_DEVICE RoiGrid<T> make_grid(const T* box, const Shape& s) {
  const T scale = static_cast<T>(s.spatial_scale);
  const T offset = s.aligned ? T(0.5) : T(0);
  const T x1 = box[0] * scale - offset, y1 = box[1] * scale - offset;
  const T x2 = box[2] * scale - offset, y2 = box[3] * scale - offset;
  T roi_w = x2 - x1, roi_h = y2 - y1;
  if (!s.aligned) {  // legacy mode forces malformed RoIs to be 1x1
    roi_w = max_of(roi_w, T(1));
    roi_h = max_of(roi_h, T(1));
  }
  RoiGrid<T> g;
  g.y0 = y1;
  g.x0 = x1;
  g.bin_h = roi_h / static_cast<T>(s.pooled_h);
  g.bin_w = roi_w / static_cast<T>(s.pooled_w);
  g.grid_h = s.sampling_ratio > 0 ? s.sampling_ratio : static_cast<int>(ceil(roi_h / static_cast<T>(s.pooled_h)));
  g.grid_w = s.sampling_ratio > 0 ? s.sampling_ratio : static_cast<int>(ceil(roi_w / static_cast<T>(s.pooled_w)));
  const int count = max_of(g.grid_h * g.grid_w, 1);
  g.inv_count = T(1) / static_cast<T>(count);
  return g;
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

// Output bin (ph, pw) of one RoI for channels [c_begin, c_end): out[c] for c in that range.
// `image` points at features[n] (H * W * C values); `out` at output[k, ph, pw, 0].
template <typename T>
TFDET_HOST_DEVICE void forward_bin(const T* image, const RoiGrid<T>& g, int ph, int pw, const Shape& s,
                                   int c_begin, int c_end, T* out) {
  for (int c = c_begin; c < c_end; ++c) out[c] = T(0);
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
