// Deformable convolution math, framework-free (torchvision.ops.deform_conv2d semantics, NHWC layout).
//
// The convolution is a bilinear im2col followed by a GEMM. Row p = (n, oy, ox) of the column matrix
// holds, for kernel point k = i * kernel_w + j and input channel c,
//   mask[n, oy, ox, g * K + k] * bilinear(inputs[n], y, x, c)          (g = c / (C / deformable_groups))
//   y = oy * stride_h - pad_h + i * dilation_h + offsets[n, oy, ox, 2 * (g * K + k)]
//   x = ox * stride_w - pad_w + j * dilation_w + offsets[n, oy, ox, 2 * (g * K + k) + 1]
// with the image zero outside. The columns of a row are laid out [groups, K, C / groups], so the
// columns of one convolution group are contiguous and, with the kernel [kh, kw, C / groups, Cout]
// read as a (K * C / groups) x Cout matrix per group, output = columns x kernel. The GEMMs are left
// to the framework (oneDNN / cuBLAS through tf.matmul); the custom kernels are the sampling (im2col)
// and its adjoint (col2im, which also yields the offsets' and mask's gradients).
//
// The CPU kernels (deform_conv_kernels.cc) and the CUDA kernels (deform_conv_cuda.cuh) call the
// per-point functions below, so they cannot disagree.
#ifndef TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_H_
#define TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_H_

#include "custom_ops/common/kernels/bilinear.h"
#include "custom_ops/common/kernels/dot.h"
#include "custom_ops/common/kernels/platform.h"

namespace tfdet {
namespace deform_conv {

struct Shape {
  int batch, height, width, in_channels;  // inputs [N, H, W, C]
  int out_h, out_w;                       // output [N, Ho, Wo, ...]
  int kernel_h, kernel_w;
  int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int groups, deformable_groups;
  bool modulated;  // a mask [N, Ho, Wo, deformable_groups * K] scales every sample

  TFDET_HOST_DEVICE int taps() const { return kernel_h * kernel_w; }
  TFDET_HOST_DEVICE long long rows() const { return static_cast<long long>(batch) * out_h * out_w; }
  TFDET_HOST_DEVICE int row_length() const { return taps() * in_channels; }  // columns per row
  TFDET_HOST_DEVICE int group_channels() const { return in_channels / groups; }
  TFDET_HOST_DEVICE int deform_channels() const { return in_channels / deformable_groups; }
};

// Column of input channel c at kernel point k within a row ([groups, K, C / groups] layout).
TFDET_HOST_DEVICE int column_index(const Shape& s, int k, int c) {
  const int cg = s.group_channels();
  return ((c / cg) * s.taps() + k) * cg + c % cg;
}

// Where a sampling point lies: on the zero-padded image (kInside, possibly partly off the map), wholly
// outside it, +-infinity included (kOutside: the point reads 0), or at a NaN position (kNan: a NaN
// offset; the point reads NaN, as in torchvision, and passes no gradient to the inputs or offsets).
enum class Sample { kInside, kOutside, kNan };

// The bilinear taps (zero-padded) and modulation of kernel point k of deformable group g in row p.
// grad_y / grad_x (may be null) receive the taps' weight derivatives (all 0 unless kInside).
template <typename T>
TFDET_HOST_DEVICE Sample sample_point(const Shape& s, const T* offsets, const T* mask, long long p, int g, int k,
                                      BilinearTaps<T>* taps, T* modulation, T* grad_y = nullptr,
                                      T* grad_x = nullptr) {
  const int ox = static_cast<int>(p % s.out_w);
  const int oy = static_cast<int>((p / s.out_w) % s.out_h);
  const int K = s.taps();
  const int i = k / s.kernel_w, j = k % s.kernel_w;
  const T* off = offsets + p * (2LL * s.deformable_groups * K) + 2 * (g * K + k);
  const T y = static_cast<T>(oy * s.stride_h - s.pad_h + i * s.dilation_h) + off[0];
  const T x = static_cast<T>(ox * s.stride_w - s.pad_w + j * s.dilation_w) + off[1];
  *modulation = s.modulated ? mask[p * (static_cast<long long>(s.deformable_groups) * K) + g * K + k] : T(1);
  if (zero_padded_bilinear_taps(y, x, s.height, s.width, taps, grad_y, grad_x)) return Sample::kInside;
  return is_nan(y) || is_nan(x) ? Sample::kNan : Sample::kOutside;
}

// Columns of row p for kernel point k, input channels [c_begin, c_end) of deformable group g.
// `image` points at inputs[n] (H * W * C values); `row` at the row's first column. A point outside
// the image writes modulation * 0 (NaN for a NaN or infinite mask value, as in torchvision).
template <typename T>
TFDET_HOST_DEVICE void im2col_point(const Shape& s, const T* image, const T* offsets, const T* mask, long long p,
                                    int g, int k, int c_begin, int c_end, T* row) {
  BilinearTaps<T> taps;
  T m;
  const Sample where = sample_point(s, offsets, mask, p, g, k, &taps, &m);
  const int cg = s.group_channels();
  const T fill = where == Sample::kNan ? quiet_nan<T>() : m * T(0);
  for (int c = c_begin; c < c_end;) {  // runs of channels that stay within one convolution group
    const int run_end = min_of(c_end, (c / cg + 1) * cg);
    T* dst = row + column_index(s, k, c) - c;
    if (where != Sample::kInside) {
      for (; c < run_end; ++c) dst[c] = fill;
      continue;
    }
    const T w0 = m * taps.weight[0], w1 = m * taps.weight[1], w2 = m * taps.weight[2], w3 = m * taps.weight[3];
    const T* s0 = image + static_cast<long long>(taps.index[0]) * s.in_channels;
    const T* s1 = image + static_cast<long long>(taps.index[1]) * s.in_channels;
    const T* s2 = image + static_cast<long long>(taps.index[2]) * s.in_channels;
    const T* s3 = image + static_cast<long long>(taps.index[3]) * s.in_channels;
    for (; c < run_end; ++c) dst[c] = w0 * s0[c] + w1 * s1[c] + w2 * s2[c] + w3 * s3[c];
  }
}

// Partial gradients of one sampling point, summed over a channel range.
template <typename T>
struct PointGrad {
  T y, x, mask;
};

// Adjoint of im2col_point: given the columns' gradient `grad_row` of row p, scatters into the image's
// gradient (`grad_image` points at grad_inputs[n]) and returns the partial sums over channels
// [c_begin, c_end) of the gradients w.r.t. the sample's y, x and mask value (0, 0 and NaN for a point
// at a NaN position: its value m * NaN is NaN whatever m is). All three are linear in
// the four dot products d[t] = sum_c grad[c] * tap_t[c] of the gradient with the taps' pixels.
template <typename T>
TFDET_HOST_DEVICE PointGrad<T> col2im_point(const Shape& s, const T* image, const T* offsets, const T* mask,
                                            long long p, int g, int k, int c_begin, int c_end, const T* grad_row,
                                            T* grad_image) {
  BilinearTaps<T> taps;
  T m, dy[4], dx[4];
  PointGrad<T> out{T(0), T(0), T(0)};
  const Sample where = sample_point(s, offsets, mask, p, g, k, &taps, &m, dy, dx);
  if (where == Sample::kNan && c_begin < c_end) out.mask = quiet_nan<T>();  // d (m * NaN) / dm
  if (where != Sample::kInside) return out;
  const int cg = s.group_channels();
  T d[4] = {T(0), T(0), T(0), T(0)};
  for (int c = c_begin; c < c_end;) {
    const int run_end = min_of(c_end, (c / cg + 1) * cg);
    const T* gcol = grad_row + column_index(s, k, c) - c;
    for (int t = 0; t < 4; ++t) {
      if (taps.weight[t] == T(0) && dy[t] == T(0) && dx[t] == T(0)) continue;  // contributes nothing
      const long long pixel = static_cast<long long>(taps.index[t]) * s.in_channels;
      if (taps.weight[t] != T(0)) {  // the scatter: one axpy per tap with weight
        const T a = m * taps.weight[t];
        for (int i = c; i < run_end; ++i) accumulate(grad_image + pixel + i, a * gcol[i]);
      }
      d[t] += dot<8>(gcol + c, image + pixel + c, run_end - c);
    }
    c = run_end;
  }
  for (int t = 0; t < 4; ++t) {
    out.mask += taps.weight[t] * d[t];
    out.y += dy[t] * d[t];
    out.x += dx[t] * d[t];
  }
  out.y *= m;
  out.x *= m;
  return out;
}

}  // namespace deform_conv
}  // namespace tfdet

#endif  // TFDET_DEFORM_CONV_KERNELS_DEFORM_CONV_H_
