// What the oneDNN FFI handlers share: the error boundary and the float32 handler signatures.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace resnet_jax {

namespace ffi = xla::ffi;

// A failure inside a handler (a bad shape, an unsupported case, memory) becomes an XLA error naming
// `what` instead of ending the process.
template <typename Body>
ffi::Error guarded(const char* what, Body&& body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const std::exception& err) {
    return ffi::Error::Internal(std::string(what) + ": " + err.what());
  }
}

// A handler binding with `Args` float32 operands and `Results` (at least one) float32 results; attributes
// are added after. The builder is a chain of temporaries (it cannot be copied), hence the recursion.
template <int Args, int Results, typename Binding>
auto float32_buffers(Binding&& binding) {
  static_assert(Results >= 1, "a handler returns at least one buffer");
  if constexpr (Args > 0) {
    return float32_buffers<Args - 1, Results>(std::move(binding).template Arg<ffi::Buffer<ffi::F32>>());
  } else if constexpr (Results > 1) {
    return float32_buffers<0, Results - 1>(std::move(binding).template Ret<ffi::Buffer<ffi::F32>>());
  } else {
    return std::move(binding).template Ret<ffi::Buffer<ffi::F32>>();
  }
}

template <int Args, int Results>
auto float32_binding() {
  return float32_buffers<Args, Results>(ffi::Ffi::Bind());
}

}  // namespace resnet_jax
