// Tiny TF-free test harness helpers for the CUDA kernels (tests/gpu/*_harness.cu).
// Exit codes: 0 = GPU results match the host (CPU-kernel) results, 1 = mismatch or CUDA error,
// 77 = no GPU present (the pytest wrapper reports that as a skip).
#ifndef TFDET_TESTS_GPU_HARNESS_H_
#define TFDET_TESTS_GPU_HARNESS_H_

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

namespace harness {

#define HARNESS_CHECK(call)                                                                  \
  do {                                                                                       \
    cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

inline void require_gpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device: nothing to run\n");
    std::exit(77);
  }
}

// Deterministic uniform numbers in [lo, hi).
struct Random {
  unsigned long long state;
  explicit Random(unsigned long long seed) : state(seed * 6364136223846793005ULL + 1442695040888963407ULL) {}
  double uniform(double lo, double hi) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * static_cast<double>(state >> 11) / 9007199254740992.0;
  }
  int integer(int n) { return static_cast<int>(uniform(0, n)) % n; }
};

template <typename T>
T* to_device(const std::vector<T>& host) {
  T* dev = nullptr;
  HARNESS_CHECK(cudaMalloc(&dev, sizeof(T) * (host.empty() ? 1 : host.size())));
  if (!host.empty()) HARNESS_CHECK(cudaMemcpy(dev, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice));
  return dev;
}

template <typename T>
std::vector<T> to_host(const T* dev, size_t n) {
  std::vector<T> host(n);
  if (n) HARNESS_CHECK(cudaMemcpy(host.data(), dev, sizeof(T) * n, cudaMemcpyDeviceToHost));
  return host;
}

template <typename T>
T nan() { return std::numeric_limits<T>::quiet_NaN(); }
template <typename T>
T inf() { return std::numeric_limits<T>::infinity(); }

// Prints the comparison and returns true when max |a - b| <= atol + rtol * max |b| over the finite
// values, and both sides are NaN (or the same infinity) at the same places.
template <typename T>
bool compare(const char* what, const std::vector<T>& gpu, const std::vector<T>& cpu, double atol, double rtol) {
  double worst = 0, scale = 0;
  size_t non_finite_mismatches = 0;
  for (size_t i = 0; i < cpu.size() && i < gpu.size(); ++i) {
    const double a = static_cast<double>(gpu[i]), b = static_cast<double>(cpu[i]);
    if (!std::isfinite(a) || !std::isfinite(b)) {
      non_finite_mismatches += !(a == b || (std::isnan(a) && std::isnan(b)));
      continue;
    }
    worst = std::fmax(worst, std::fabs(a - b));
    scale = std::fmax(scale, std::fabs(b));
  }
  const bool ok = gpu.size() == cpu.size() && non_finite_mismatches == 0 && worst <= atol + rtol * scale;
  std::printf("%-40s n=%-9zu max|gpu-cpu|=%.3g (max|cpu|=%.3g, NaN/inf mismatches %zu) %s\n", what, cpu.size(), worst,
              scale, non_finite_mismatches, ok ? "OK" : "MISMATCH");
  return ok;
}

}  // namespace harness

#endif  // TFDET_TESTS_GPU_HARNESS_H_
