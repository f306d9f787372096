// Helpers for the thin TF OpKernels of every op (this header depends on TensorFlow; the math in
// custom_ops/*/kernels/ does not).
#ifndef TFDET_COMMON_OP_UTILS_H_
#define TFDET_COMMON_OP_UTILS_H_

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tfdet {

// InvalidArgument status with a message built from the pieces, e.g.
// OP_REQUIRES(ctx, ok, InvalidArgument("roi_align: boxes must be [K, 4], got ", shape)).
template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

}  // namespace tfdet

#endif  // TFDET_COMMON_OP_UTILS_H_
