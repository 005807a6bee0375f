// oneDNN convolutions for XLA on CPU, exposed through the XLA FFI.
//
// Why: XLA's CPU convolution (Eigen) runs a CIFAR ResNet's 3x3 convolutions at half the speed of the
// oneDNN kernels PyTorch uses, and 20-40x slower inside loops (jax-ml/jax#12868). A custom call runs
// the same oneDNN kernels in or out of loops. Three handlers: forward, gradient w.r.t. the input,
// gradient w.r.t. the kernel. Layouts: activations NHWC, kernels HWIO (Flax's), symmetric k/2 padding.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's geometry, in oneDNN's logical (NCHW / OIHW) order.
struct Geometry {
  memory::dims src, weights, dst, strides, pad_l, pad_r;
};

Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, int64_t stride) {
  if (x.size() != 4 || w.size() != 4 || w[2] != x[3] || stride < 1) {
    throw std::invalid_argument(
        "expected NHWC activations, an HWIO kernel with matching input channels, stride >= 1");
  }
  const int64_t n = x[0], h = x[1], wd = x[2], c = x[3];
  const int64_t kh = w[0], kw = w[1], co = w[3];
  const int64_t oh = (h + stride - 1) / stride, ow = (wd + stride - 1) / stride;
  const int64_t pt = kh / 2, pl = kw / 2;
  return Geometry{{n, c, h, wd},
                  {co, c, kh, kw},
                  {n, co, oh, ow},
                  {stride, stride},
                  {pt, pl},
                  {(oh - 1) * stride + kh - h - pt, (ow - 1) * stride + kw - wd - pl}};
}

// The output gradient / output must have the convolution's output shape (NHWC of `nchw`).
void expect_output_shape(ffi::Span<const int64_t> nhwc, const memory::dims& nchw) {
  if (nhwc.size() != 4 || nhwc[0] != nchw[0] || nhwc[1] != nchw[2] || nhwc[2] != nchw[3] ||
      nhwc[3] != nchw[1]) {
    throw std::invalid_argument("output (gradient) shape does not match the convolution's output");
  }
}

memory::desc md(const memory::dims& dims, Tag tag) { return memory::desc(dims, Dt::f32, tag); }

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The three primitives of one geometry, created once: creating a primitive descriptor costs far more
// than a small convolution.
struct Plan {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
};

Plan make_plan(const Geometry& g) {
  auto& eng = cpu_engine();
  const auto attr = user_scratchpad();
  const auto src = md(g.src, Tag::nhwc), dst = md(g.dst, Tag::nhwc), wei = md(g.weights, Tag::any);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei, dst,
      g.strides, g.pad_l, g.pad_r, attr);
  auto bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src, wei, dst, g.strides, g.pad_l, g.pad_r, fwd_pd,
      attr);
  auto bwd_weights_pd = dnnl::convolution_backward_weights::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src, wei, dst, g.strides, g.pad_l, g.pad_r, fwd_pd,
      attr);
  return Plan{fwd_pd,
              bwd_data_pd,
              bwd_weights_pd,
              dnnl::convolution_forward(fwd_pd),
              dnnl::convolution_backward_data(bwd_data_pd),
              dnnl::convolution_backward_weights(bwd_weights_pd)};
}

const Plan& plan_for(const Geometry& g) {
  static std::mutex mutex;
  static std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
  std::vector<int64_t> key(g.src.begin(), g.src.end());
  key.insert(key.end(), g.weights.begin(), g.weights.end());
  key.push_back(g.strides[0]);
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = plans[key];
  if (!slot) slot = std::make_unique<Plan>(make_plan(g));
  return *slot;
}

// A memory in the primitive's layout: the caller's buffer when the layouts agree, else a reordered
// copy (kernels only: oneDNN prefers blocked kernel layouts; they are a few kilobytes).
memory as_layout(dnnl::stream& stream, memory user, const memory::desc& wanted) {
  if (user.get_desc() == wanted) return user;
  memory out(wanted, cpu_engine());
  dnnl::reorder(user, out).execute(stream, user, out);
  return out;
}

void run(dnnl::stream& stream, const dnnl::primitive& prim, const memory::desc& scratch_md,
         std::unordered_map<int, memory> args) {
  std::vector<uint8_t> scratch(scratch_md.get_size());
  args.insert({DNNL_ARG_SCRATCHPAD, memory(scratch_md, cpu_engine(), scratch.data())});
  prim.execute(stream, args);
  stream.wait();
}

// Forward and input gradient: one NHWC activation in, one out, the HWIO kernel in the primitive's layout.
template <typename PrimitiveDesc>
void run_with_kernel(const PrimitiveDesc& pd, const dnnl::primitive& prim, const Geometry& g, float* kernel,
                     int in_arg, const memory::dims& in_dims, void* in, int out_arg,
                     const memory::dims& out_dims, void* out) {
  dnnl::stream stream(cpu_engine());
  memory user_w(md(g.weights, Tag::hwio), cpu_engine(), kernel);
  run(stream, prim, pd.scratchpad_desc(),
      {{in_arg, memory(md(in_dims, Tag::nhwc), cpu_engine(), in)},
       {DNNL_ARG_WEIGHTS, as_layout(stream, user_w, pd.weights_desc())},
       {out_arg, memory(md(out_dims, Tag::nhwc), cpu_engine(), out)}});
}

ffi::Error ConvForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                           ffi::ResultBuffer<ffi::F32> y, int64_t stride) {
  return resnet_jax::guarded("oneDNN convolution", [&] {
    const Geometry g = geometry(x.dimensions(), w.dimensions(), stride);
    expect_output_shape(y->dimensions(), g.dst);
    const Plan& p = plan_for(g);
    run_with_kernel(p.fwd_pd, p.fwd, g, w.typed_data(), DNNL_ARG_SRC, g.src, x.typed_data(), DNNL_ARG_DST,
                    g.dst, y->typed_data());
  });
}

ffi::Error ConvInputGradImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                             ffi::ResultBuffer<ffi::F32> dx, int64_t stride) {
  return resnet_jax::guarded("oneDNN convolution", [&] {
    const Geometry g = geometry(dx->dimensions(), w.dimensions(), stride);
    expect_output_shape(dy.dimensions(), g.dst);
    const Plan& p = plan_for(g);
    run_with_kernel(p.bwd_data_pd, p.bwd_data, g, w.typed_data(), DNNL_ARG_DIFF_DST, g.dst, dy.typed_data(),
                    DNNL_ARG_DIFF_SRC, g.src, dx->typed_data());
  });
}

ffi::Error ConvKernelGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                              ffi::ResultBuffer<ffi::F32> dw, int64_t stride) {
  return resnet_jax::guarded("oneDNN convolution", [&] {
    const Geometry g = geometry(x.dimensions(), dw->dimensions(), stride);
    expect_output_shape(dy.dimensions(), g.dst);
    const Plan& p = plan_for(g);
    dnnl::stream stream(cpu_engine());
    memory user_dw(md(g.weights, Tag::hwio), cpu_engine(), dw->typed_data());
    const auto& wanted = p.bwd_weights_pd.diff_weights_desc();
    memory diff_w = wanted == user_dw.get_desc() ? user_dw : memory(wanted, cpu_engine());
    run(stream, p.bwd_weights, p.bwd_weights_pd.scratchpad_desc(),
        {{DNNL_ARG_SRC, memory(md(g.src, Tag::nhwc), cpu_engine(), x.typed_data())},
         {DNNL_ARG_DIFF_DST, memory(md(g.dst, Tag::nhwc), cpu_engine(), dy.typed_data())},
         {DNNL_ARG_DIFF_WEIGHTS, diff_w}});
    if (diff_w != user_dw) {
      dnnl::reorder(diff_w, user_dw).execute(stream, diff_w, user_dw);
      stream.wait();
    }
  });
}

}  // namespace

// Every handler: two float32 operands, one float32 result, the stride.
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, ConvForwardImpl,
                              (resnet_jax::float32_binding<2, 1>().Attr<int64_t>("stride")));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvInputGrad, ConvInputGradImpl,
                              (resnet_jax::float32_binding<2, 1>().Attr<int64_t>("stride")));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKernelGrad, ConvKernelGradImpl,
                              (resnet_jax::float32_binding<2, 1>().Attr<int64_t>("stride")));
