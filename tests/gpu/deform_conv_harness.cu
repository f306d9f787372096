// Deformable-convolution CUDA kernels (im2col, col2im) vs the CPU kernels' per-point functions, on
// random cases, without TensorFlow. Build and run (see tests/gpu/README.md):
//   nvcc -std=c++17 -I. tests/gpu/deform_conv_harness.cu -o /tmp/deform_conv_harness && /tmp/deform_conv_harness
#include <vector>

#include "custom_ops/deform_conv/kernels/deform_conv_cuda.cuh"
#include "tests/gpu/harness.h"

using namespace tfdet::deform_conv;

template <typename T>
bool run_case(int seed, Shape s) {
  harness::Random rng(seed);
  s.out_h = (s.height + 2 * s.pad_h - s.dilation_h * (s.kernel_h - 1) - 1) / s.stride_h + 1;
  s.out_w = (s.width + 2 * s.pad_w - s.dilation_w * (s.kernel_w - 1) - 1) / s.stride_w + 1;
  const long long image = static_cast<long long>(s.height) * s.width * s.in_channels;
  const int K = s.taps(), dgk = s.deformable_groups * K, cd = s.deform_channels();
  const long long rows = s.rows(), L = s.row_length();
  std::vector<T> inputs(s.batch * image), offsets(rows * 2 * dgk), mask(s.modulated ? rows * dgk : 0);
  std::vector<T> grad_cols(rows * L);
  for (auto& v : inputs) v = static_cast<T>(rng.uniform(-1, 1));
  for (auto& v : offsets) v = static_cast<T>(rng.uniform(-3, 3));  // many samples fall partly outside
  for (auto& v : mask) v = static_cast<T>(rng.uniform(0, 1));
  for (auto& v : grad_cols) v = static_cast<T>(rng.uniform(-1, 1));
  if (offsets.size() >= 8) {  // NaN (reads NaN), +-inf and huge (outside: reads 0) sampling positions
    offsets[0] = harness::nan<T>(), offsets[3] = harness::inf<T>();
    offsets[4] = -harness::inf<T>(), offsets[7] = static_cast<T>(1e30);
  }

  // Host: the loops of the CPU kernels (deform_conv_kernels.cc) over the shared per-point functions.
  std::vector<T> cpu_cols(rows * L), cpu_grad_in(inputs.size(), T(0)), cpu_grad_off(offsets.size());
  std::vector<T> cpu_grad_mask(mask.size());
  const long long plane = static_cast<long long>(s.out_h) * s.out_w;
  for (long long p = 0; p < rows; ++p) {
    const long long n = p / plane;
    for (int g = 0; g < s.deformable_groups; ++g) {
      for (int k = 0; k < K; ++k) {
        im2col_point(s, &inputs[n * image], offsets.data(), mask.data(), p, g, k, g * cd, (g + 1) * cd,
                     &cpu_cols[p * L]);
        const PointGrad<T> pg = col2im_point(s, &inputs[n * image], offsets.data(), mask.data(), p, g, k, g * cd,
                                             (g + 1) * cd, &grad_cols[p * L], &cpu_grad_in[n * image]);
        cpu_grad_off[p * 2 * dgk + 2 * (g * K + k)] = pg.y;
        cpu_grad_off[p * 2 * dgk + 2 * (g * K + k) + 1] = pg.x;
        if (s.modulated) cpu_grad_mask[p * dgk + g * K + k] = pg.mask;
      }
    }
  }

  T* d_inputs = harness::to_device(inputs);
  T* d_offsets = harness::to_device(offsets);
  T* d_mask = harness::to_device(mask);
  T* d_grad_cols = harness::to_device(grad_cols);
  T *d_cols = nullptr, *d_grad_in = nullptr, *d_grad_off = nullptr, *d_grad_mask = nullptr;
  HARNESS_CHECK(cudaMalloc(&d_cols, sizeof(T) * (cpu_cols.empty() ? 1 : cpu_cols.size())));
  HARNESS_CHECK(cudaMalloc(&d_grad_in, sizeof(T) * (inputs.empty() ? 1 : inputs.size())));
  HARNESS_CHECK(cudaMalloc(&d_grad_off, sizeof(T) * (offsets.empty() ? 1 : offsets.size())));
  HARNESS_CHECK(cudaMalloc(&d_grad_mask, sizeof(T) * (mask.empty() ? 1 : mask.size())));
  HARNESS_CHECK(cudaMemset(d_grad_in, 0, sizeof(T) * inputs.size()));
  HARNESS_CHECK(launch_im2col(s, d_inputs, d_offsets, s.modulated ? d_mask : nullptr, d_cols, 0));
  HARNESS_CHECK(launch_col2im(s, d_inputs, d_offsets, s.modulated ? d_mask : nullptr, d_grad_cols, d_grad_in,
                              d_grad_off, s.modulated ? d_grad_mask : nullptr, 0));
  HARNESS_CHECK(cudaDeviceSynchronize());
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  const char* type = sizeof(T) == 4 ? "f32" : "f64";
  char name[96];
  bool ok = true;
  std::snprintf(name, sizeof(name), "deform im2col %s seed=%d", type, seed);
  ok &= harness::compare(name, harness::to_host(d_cols, cpu_cols.size()), cpu_cols, tol, tol);
  std::snprintf(name, sizeof(name), "deform col2im inputs %s seed=%d", type, seed);
  ok &= harness::compare(name, harness::to_host(d_grad_in, inputs.size()), cpu_grad_in, 10 * tol, 10 * tol);
  std::snprintf(name, sizeof(name), "deform col2im offsets %s seed=%d", type, seed);
  ok &= harness::compare(name, harness::to_host(d_grad_off, offsets.size()), cpu_grad_off, 10 * tol, 10 * tol);
  if (s.modulated) {
    std::snprintf(name, sizeof(name), "deform col2im mask %s seed=%d", type, seed);
    ok &= harness::compare(name, harness::to_host(d_grad_mask, mask.size()), cpu_grad_mask, 10 * tol, 10 * tol);
  }
  for (void* p : {(void*)d_inputs, (void*)d_offsets, (void*)d_mask, (void*)d_grad_cols, (void*)d_cols,
                  (void*)d_grad_in, (void*)d_grad_off, (void*)d_grad_mask})
    cudaFree(p);
  return ok;
}

// Shape fields: batch, height, width, in_channels, out_h, out_w (computed), kernel_h, kernel_w, stride_h,
// stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, deformable_groups, modulated.
int main() {
  harness::require_gpu();
  bool ok = true;
  ok &= run_case<float>(1, Shape{2, 9, 11, 8, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true});
  ok &= run_case<float>(2, Shape{1, 12, 10, 16, 0, 0, 3, 3, 2, 2, 2, 2, 2, 2, 2, 4, true});
  ok &= run_case<float>(3, Shape{1, 25, 42, 256, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, false});  // a c3-like level
  ok &= run_case<double>(4, Shape{2, 7, 9, 6, 0, 0, 3, 2, 1, 2, 1, 0, 2, 1, 3, 2, true});
  ok &= run_case<double>(5, Shape{0, 7, 9, 6, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true});  // empty batch
  std::printf(ok ? "ALL OK\n" : "FAILED\n");
  return ok ? 0 : 1;
}
