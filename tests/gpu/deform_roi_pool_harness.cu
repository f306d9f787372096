// Deformable RoI pooling CUDA kernels vs the CPU kernels' per-bin functions, on random cases, without
// TensorFlow. Build and run (see tests/gpu/README.md):
//   nvcc -std=c++17 -I. tests/gpu/deform_roi_pool_harness.cu -o /tmp/drp_harness && /tmp/drp_harness
#include <vector>

#include "custom_ops/deform_roi_pool/kernels/deform_roi_pool_cuda.cuh"
#include "tests/gpu/harness.h"

using namespace tfdet::deform_roi_pool;

template <typename T>
bool run_case(int seed, Shape s, T gamma, bool with_offsets) {
  harness::Random rng(seed);
  const size_t image = static_cast<size_t>(s.height) * s.width * s.channels;
  const size_t bins = static_cast<size_t>(s.num_rois) * s.pooled_h * s.pooled_w;
  std::vector<T> features(s.batch * image), boxes(4 * s.num_rois), offsets(with_offsets ? 2 * bins : 0);
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
  for (auto& v : offsets) v = static_cast<T>(rng.uniform(-2, 2));
  if (s.num_rois >= 2) {  // a NaN box; NaN, +-inf and huge offsets (NaN bins or bins outside the map)
    boxes[4 * 1 + 2] = harness::nan<T>();
    if (with_offsets && bins >= 4) {
      offsets[0] = harness::nan<T>(), offsets[3] = harness::inf<T>();
      offsets[4] = -harness::inf<T>(), offsets[7] = static_cast<T>(1e30);
    }
  }
  std::vector<T> grad_out(bins * s.channels);
  for (auto& v : grad_out) v = static_cast<T>(rng.uniform(-1, 1));
  const T* off = with_offsets ? offsets.data() : nullptr;

  // Host: the loops of the CPU kernels (deform_roi_pool_kernels.cc) over the shared per-bin functions.
  std::vector<T> cpu_out(bins * s.channels), cpu_grad(features.size(), T(0)), cpu_grad_off(offsets.size());
  for (size_t bin = 0; bin < bins; ++bin) {
    const tfdet::roi_align::Bin b = tfdet::roi_align::unflatten_bin(bin, s);
    const RoiGrid<T> g = bin_grid(&boxes[4 * b.k], off == nullptr ? nullptr : off + 2 * bin, gamma, s);
    const T* img = &features[indices[b.k] * image];
    tfdet::roi_align::forward_bin(img, g, b.ph, b.pw, s, 0, s.channels, &cpu_out[bin * s.channels]);
    tfdet::roi_align::backward_bin(&grad_out[bin * s.channels], g, b.ph, b.pw, s, 0, s.channels,
                                   &cpu_grad[indices[b.k] * image]);
    if (with_offsets) {
      offset_grad_bin(img, g, b.ph, b.pw, gamma, s, 0, s.channels, &grad_out[bin * s.channels], &cpu_grad_off[2 * bin]);
    }
  }

  T* d_features = harness::to_device(features);
  T* d_boxes = harness::to_device(boxes);
  int* d_indices = harness::to_device(indices);
  T* d_offsets = harness::to_device(offsets);
  T* d_grad_out = harness::to_device(grad_out);
  T *d_out = nullptr, *d_grad = nullptr, *d_grad_off = nullptr;
  HARNESS_CHECK(cudaMalloc(&d_out, sizeof(T) * (cpu_out.empty() ? 1 : cpu_out.size())));
  HARNESS_CHECK(cudaMalloc(&d_grad, sizeof(T) * features.size()));
  HARNESS_CHECK(cudaMalloc(&d_grad_off, sizeof(T) * (offsets.empty() ? 1 : offsets.size())));
  HARNESS_CHECK(cudaMemset(d_grad, 0, sizeof(T) * features.size()));
  const T* d_off = with_offsets ? d_offsets : nullptr;
  HARNESS_CHECK(launch_forward(s, gamma, d_features, d_boxes, d_indices, d_off, d_out, 0));
  HARNESS_CHECK(launch_backward(s, gamma, d_grad_out, d_features, d_boxes, d_indices, d_off, d_grad,
                                with_offsets ? d_grad_off : nullptr, 0));
  HARNESS_CHECK(cudaDeviceSynchronize());
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  const char* type = sizeof(T) == 4 ? "f32" : "f64";
  char name[96];
  std::snprintf(name, sizeof(name), "deform_roi_pool fwd %s seed=%d off=%d", type, seed, with_offsets);
  bool ok = harness::compare(name, harness::to_host(d_out, cpu_out.size()), cpu_out, tol, tol);
  std::snprintf(name, sizeof(name), "deform_roi_pool bwd features %s seed=%d", type, seed);
  ok &= harness::compare(name, harness::to_host(d_grad, features.size()), cpu_grad, 10 * tol, 10 * tol);
  if (with_offsets) {
    std::snprintf(name, sizeof(name), "deform_roi_pool bwd offsets %s seed=%d", type, seed);
    ok &= harness::compare(name, harness::to_host(d_grad_off, offsets.size()), cpu_grad_off, 10 * tol, 10 * tol);
  }
  for (void* p : {(void*)d_features, (void*)d_boxes, (void*)d_indices, (void*)d_offsets, (void*)d_grad_out,
                  (void*)d_out, (void*)d_grad, (void*)d_grad_off})
    cudaFree(p);
  return ok;
}

int main() {
  harness::require_gpu();
  bool ok = true;
  //                    N  H   W   C    K   ph pw sr scale  aligned
  ok &= run_case<float>(1, Shape{2, 13, 17, 3, 20, 7, 7, 0, 0.5f, true}, 0.1f, true);
  ok &= run_case<float>(2, Shape{2, 13, 17, 3, 20, 5, 4, 2, 0.5f, true}, 0.1f, false);
  ok &= run_case<float>(3, Shape{1, 50, 84, 256, 64, 7, 7, 2, 0.0625f, true}, 0.1f, true);
  ok &= run_case<double>(4, Shape{3, 9, 11, 5, 30, 3, 3, 0, 0.25f, true}, 0.2, true);
  ok &= run_case<double>(5, Shape{1, 8, 8, 2, 0, 7, 7, 0, 1.0f, true}, 0.1, true);  // no boxes
  std::printf(ok ? "ALL OK\n" : "FAILED\n");
  return ok ? 0 : 1;
}
