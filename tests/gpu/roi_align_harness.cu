// RoIAlign CUDA kernels vs the CPU kernel's per-bin functions, on random cases, without TensorFlow.
// Build and run (see tests/gpu/README.md):
//   nvcc -std=c++17 -I. tests/gpu/roi_align_harness.cu -o /tmp/roi_align_harness && /tmp/roi_align_harness
#include <vector>

#include "custom_ops/roi_align/kernels/roi_align_cuda.cuh"
#include "tests/gpu/harness.h"

using namespace tfdet::roi_align;

template <typename T>
bool run_case(int seed, Shape s) {
  harness::Random rng(seed);
  const size_t image = static_cast<size_t>(s.height) * s.width * s.channels;
  std::vector<T> features(s.batch * image), boxes(4 * s.num_rois);
  std::vector<int> indices(s.num_rois);
  for (auto& v : features) v = static_cast<T>(rng.uniform(-1, 1));
  const double img_h = s.height / s.spatial_scale, img_w = s.width / s.spatial_scale;
  for (int k = 0; k < s.num_rois; ++k) {
    const double x1 = rng.uniform(-0.2 * img_w, img_w), y1 = rng.uniform(-0.2 * img_h, img_h);
    boxes[4 * k + 0] = static_cast<T>(x1);
    boxes[4 * k + 1] = static_cast<T>(y1);
    boxes[4 * k + 2] = static_cast<T>(x1 + rng.uniform(0, img_w));
    boxes[4 * k + 3] = static_cast<T>(y1 + rng.uniform(0, img_h));
    indices[k] = rng.integer(s.batch);
  }
  if (s.num_rois >= 3) {  // non-finite boxes (NaN bins, no gradient) and a huge finite one (reads 0)
    boxes[0] = harness::nan<T>();
    boxes[4 + 3] = harness::inf<T>();
    boxes[8 + 0] = static_cast<T>(-1e30), boxes[8 + 2] = static_cast<T>(1e30);
  }
  const size_t out_size = static_cast<size_t>(s.num_rois) * s.pooled_h * s.pooled_w * s.channels;
  std::vector<T> grad_out(out_size);
  for (auto& v : grad_out) v = static_cast<T>(rng.uniform(-1, 1));

  // Host: the loops of the CPU kernel (roi_align_kernels.cc) over the shared per-bin functions.
  std::vector<T> cpu_out(out_size), cpu_grad(features.size(), T(0));
  for (size_t bin = 0; bin < out_size / s.channels; ++bin) {
    const Bin b = unflatten_bin(bin, s);
    const RoiGrid<T> g = make_grid(&boxes[4 * b.k], s);
    forward_bin(&features[indices[b.k] * image], g, b.ph, b.pw, s, 0, s.channels, &cpu_out[bin * s.channels]);
    backward_bin(&grad_out[bin * s.channels], g, b.ph, b.pw, s, 0, s.channels, &cpu_grad[indices[b.k] * image]);
  }

  T* d_features = harness::to_device(features);
  T* d_boxes = harness::to_device(boxes);
  int* d_indices = harness::to_device(indices);
  T* d_grad_out = harness::to_device(grad_out);
  T *d_out = nullptr, *d_grad = nullptr;
  HARNESS_CHECK(cudaMalloc(&d_out, sizeof(T) * (out_size ? out_size : 1)));
  HARNESS_CHECK(cudaMalloc(&d_grad, sizeof(T) * features.size()));
  HARNESS_CHECK(cudaMemset(d_grad, 0, sizeof(T) * features.size()));
  HARNESS_CHECK(launch_forward(d_features, d_boxes, d_indices, s, d_out, 0));
  HARNESS_CHECK(launch_backward(d_grad_out, d_boxes, d_indices, s, d_grad, 0));
  HARNESS_CHECK(cudaDeviceSynchronize());
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  char name[96];
  std::snprintf(name, sizeof(name), "roi_align fwd %s seed=%d sr=%d al=%d", sizeof(T) == 4 ? "f32" : "f64", seed,
                s.sampling_ratio, s.aligned);
  bool ok = harness::compare(name, harness::to_host(d_out, out_size), cpu_out, tol, tol);
  std::snprintf(name, sizeof(name), "roi_align bwd %s seed=%d sr=%d al=%d", sizeof(T) == 4 ? "f32" : "f64", seed,
                s.sampling_ratio, s.aligned);
  ok &= harness::compare(name, harness::to_host(d_grad, features.size()), cpu_grad, 10 * tol, 10 * tol);
  for (void* p : {(void*)d_features, (void*)d_boxes, (void*)d_indices, (void*)d_grad_out, (void*)d_out, (void*)d_grad})
    cudaFree(p);
  return ok;
}

int main() {
  harness::require_gpu();
  bool ok = true;
  //            N  H   W   C    K   ph pw sr scale  aligned
  ok &= run_case<float>(1, Shape{2, 13, 17, 3, 20, 7, 7, 0, 0.5f, true});
  ok &= run_case<float>(2, Shape{2, 13, 17, 3, 20, 5, 4, 2, 0.5f, false});
  ok &= run_case<float>(3, Shape{1, 50, 84, 256, 64, 7, 7, 0, 0.0625f, true});   // a Mask R-CNN-like level
  ok &= run_case<double>(4, Shape{3, 9, 11, 5, 30, 14, 14, 0, 0.25f, true});
  ok &= run_case<double>(5, Shape{1, 8, 8, 2, 0, 7, 7, 0, 1.0f, true});          // no boxes
  std::printf(ok ? "ALL OK\n" : "FAILED\n");
  return ok ? 0 : 1;
}
