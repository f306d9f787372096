// Framework-free helpers shared by the CPU and CUDA kernels of every tfdet op (docs/design.md, "Kernels").
// Nothing here includes TensorFlow: the CUDA kernels can be built and tested with nvcc alone.
#ifndef TFDET_COMMON_KERNELS_PLATFORM_H_
#define TFDET_COMMON_KERNELS_PLATFORM_H_

#if defined(__CUDACC__)
#define TFDET_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TFDET_HOST_DEVICE inline
#endif

#include <cmath>

namespace tfdet {

// Non-finite values (NaN, +-inf), tested without <cmath>'s overloads so that one spelling serves the
// host and the device. The op library is built without -ffast-math, which would break both.
template <typename T>
TFDET_HOST_DEVICE bool is_nan(T v) { return v != v; }
template <typename T>
TFDET_HOST_DEVICE bool is_finite(T v) { return v - v == T(0); }  // inf - inf and NaN - NaN are NaN
template <typename T>
TFDET_HOST_DEVICE T quiet_nan() { return static_cast<T>(NAN); }

template <typename T>
TFDET_HOST_DEVICE T min_of(T a, T b) { return a < b ? a : b; }
template <typename T>
TFDET_HOST_DEVICE T max_of(T a, T b) { return a > b ? a : b; }

// Adds v to *p: plain on the host (callers shard so that no two threads share an address), atomic on
// the device.
template <typename T>
TFDET_HOST_DEVICE void accumulate(T* p, T v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

}  // namespace tfdet

#endif  // TFDET_COMMON_KERNELS_PLATFORM_H_
