// CARAFE CUDA kernels vs the CPU kernel's per-pixel functions, on random cases, without TensorFlow.
// Build and run (see tests/gpu/README.md):
//   nvcc -std=c++17 -I. tests/gpu/carafe_harness.cu -o /tmp/carafe_harness && /tmp/carafe_harness
#include <vector>

#include "custom_ops/carafe/kernels/carafe_cuda.cuh"
#include "tests/gpu/harness.h"

using namespace tfdet::carafe;

template <typename T>
bool run_case(int seed, Shape s) {
  harness::Random rng(seed);
  const size_t in_pixels = static_cast<size_t>(s.batch) * s.height * s.width;
  const size_t out_pixels = static_cast<size_t>(s.batch) * s.out_height() * s.out_width();
  std::vector<T> features(in_pixels * s.channels), masks(out_pixels * s.mask_channels());
  std::vector<T> grad_out(out_pixels * s.channels);
  for (auto& v : features) v = static_cast<T>(rng.uniform(-1, 1));
  for (auto& v : masks) v = static_cast<T>(rng.uniform(0, 1));
  for (auto& v : grad_out) v = static_cast<T>(rng.uniform(-1, 1));

  // Host: the loops of the CPU kernel (carafe_kernels.cc) over the shared per-pixel functions.
  std::vector<T> cpu_out(grad_out.size()), cpu_grad_features(features.size()), cpu_grad_masks(masks.size());
  for (size_t p = 0; p < out_pixels; ++p) {
    const int x = static_cast<int>(p % s.out_width());
    const int y = static_cast<int>((p / s.out_width()) % s.out_height());
    const int n = static_cast<int>(p / (static_cast<size_t>(s.out_width()) * s.out_height()));
    forward_pixel<64>(features.data(), masks.data(), s, n, y, x, 0, s.channels, &cpu_out[p * s.channels]);
    for (int m = 0; m < s.mask_channels(); ++m) {
      cpu_grad_masks[p * s.mask_channels() + m] =
          backward_mask_value<32>(grad_out.data(), features.data(), s, n, y, x, m);
    }
  }
  for (size_t p = 0; s.channels > 0 && p < in_pixels; ++p) {
    const int ix = static_cast<int>(p % s.width);
    const int iy = static_cast<int>((p / s.width) % s.height);
    const int n = static_cast<int>(p / (static_cast<size_t>(s.width) * s.height));
    backward_features_pixel<64>(grad_out.data(), masks.data(), s, n, iy, ix, 0, s.channels,
                                &cpu_grad_features[p * s.channels]);
  }

  T* d_features = harness::to_device(features);
  T* d_masks = harness::to_device(masks);
  T* d_grad_out = harness::to_device(grad_out);
  T *d_out = nullptr, *d_grad_features = nullptr, *d_grad_masks = nullptr;
  HARNESS_CHECK(cudaMalloc(&d_out, sizeof(T) * (grad_out.empty() ? 1 : grad_out.size())));
  HARNESS_CHECK(cudaMalloc(&d_grad_features, sizeof(T) * (features.empty() ? 1 : features.size())));
  HARNESS_CHECK(cudaMalloc(&d_grad_masks, sizeof(T) * (masks.empty() ? 1 : masks.size())));
  HARNESS_CHECK(launch_forward(d_features, d_masks, s, d_out, 0));
  HARNESS_CHECK(launch_backward(d_grad_out, d_features, d_masks, s, d_grad_features, d_grad_masks, 0));
  HARNESS_CHECK(cudaDeviceSynchronize());
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  char name[96];
  const char* type = sizeof(T) == 4 ? "f32" : "f64";
  std::snprintf(name, sizeof(name), "carafe fwd %s seed=%d k=%d G=%d s=%d", type, seed, s.kernel_size,
                s.group_size, s.scale_factor);
  bool ok = harness::compare(name, harness::to_host(d_out, grad_out.size()), cpu_out, tol, tol);
  std::snprintf(name, sizeof(name), "carafe bwd features %s seed=%d", type, seed);
  ok &= harness::compare(name, harness::to_host(d_grad_features, features.size()), cpu_grad_features, 10 * tol,
                         10 * tol);
  std::snprintf(name, sizeof(name), "carafe bwd masks %s seed=%d", type, seed);
  ok &= harness::compare(name, harness::to_host(d_grad_masks, masks.size()), cpu_grad_masks, 10 * tol, 10 * tol);
  for (void* p : {(void*)d_features, (void*)d_masks, (void*)d_grad_out, (void*)d_out, (void*)d_grad_features,
                  (void*)d_grad_masks}) {
    cudaFree(p);
  }
  return ok;
}

int main() {
  harness::require_gpu();
  bool ok = true;
  //                          N   H   W    C  k  G  s
  ok &= run_case<float>(1, Shape{2, 7, 9, 16, 5, 1, 2});
  ok &= run_case<float>(2, Shape{1, 5, 4, 214, 3, 2, 4});     // 107 channels per group: every CPU block width
  ok &= run_case<float>(3, Shape{1, 50, 84, 256, 5, 1, 2});   // an FPN level
  ok &= run_case<double>(4, Shape{2, 3, 6, 12, 5, 4, 3});     // kernel wider than the map
  ok &= run_case<double>(5, Shape{0, 4, 4, 8, 5, 1, 2});      // empty batch
  ok &= run_case<double>(6, Shape{1, 4, 4, 0, 3, 1, 2});      // no channels: mask gradients are all zero
  std::printf(ok ? "ALL OK\n" : "FAILED\n");
  return ok ? 0 : 1;
}
