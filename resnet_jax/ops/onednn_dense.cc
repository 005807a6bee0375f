// The dense net's whole stack of blocks, forward and backward, as two XLA FFI calls on CPU.
//
// Block l: h[l] = relu(a[l] W1[l] + b1[l]);  out[l] = relu(h[l] W2[l] + b2[l] + a[l])  (plain: no "+ a[l]"),
// a[l+1] = out[l]. Why one call for all blocks: at width 64 a block's products take ~10 us each, while
// XLA spends as long again per block on loop bookkeeping (slicing the stacked weights, stacking the saved
// activations and gradients, a dozen small fusions), and runs each small product on one core.
// Here every thread takes a slice of the batch through all blocks (rows are independent, so the
// threads never wait for each other); the kernel gradients, sums over the batch, come after, one
// block per thread. The products are oneDNN's sgemm, single-threaded inside each thread.
// A population's members (every operand with a leading member axis M) go through in the same call, their
// chunks shared among the threads: under `vmap` the members cost one call, not M calls in an XLA loop.
#include <immintrin.h>
#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "oneapi/dnnl/dnnl.h"
#include "onednn_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Row-major c[m, n] = op(a) op(b) + beta c, op transposing when asked.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
          float beta, float* c) {
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  if (dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, beta, c, n) !=
      dnnl_success) {
    throw std::runtime_error("dnnl_sgemm failed");
  }
}

// x = relu(x + bias (+ identity)), row by row: the product's epilogue in one pass.
void add_bias_relu(float* x, const float* bias, const float* identity, int64_t rows, int64_t width) {
  for (int64_t i = 0; i < rows; ++i) {
    float* xi = x + i * width;
    if (identity != nullptr) {
      const float* ai = identity + i * width;
      for (int64_t j = 0; j < width; ++j) xi[j] = std::max(xi[j] + bias[j] + ai[j], 0.0f);
    } else {
      for (int64_t j = 0; j < width; ++j) xi[j] = std::max(xi[j] + bias[j], 0.0f);
    }
  }
}

// g *= (y > 0): the ReLU's gradient, 0 at 0 as in jax.nn.relu; also written to `copy` when given.
void relu_grad(float* g, const float* y, float* copy, int64_t n) {
  if (copy == nullptr) {
    for (int64_t i = 0; i < n; ++i) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
    return;
  }
  for (int64_t i = 0; i < n; ++i) copy[i] = g[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

void column_sums(const float* x, float* sums, int64_t rows, int64_t width) {
  std::fill(sums, sums + width, 0.0f);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < width; ++j) sums[j] += x[i * width + j];
  }
}

struct Shape {
  int64_t members, blocks, batch, width;  // members: a population's (1 for one net), each with its own everything
  int64_t act() const { return batch * width; }
  int64_t ker() const { return width * width; }
};

// The leading member axis of `dims` when it has one (rank `rank` + 1), else 0; the rest must be `rank`-D.
int64_t leading_members(ffi::Span<const int64_t> dims, size_t rank) {
  if (dims.size() == rank + 1) return dims[0];
  if (dims.size() == rank) return 0;
  throw std::invalid_argument("expected every operand with or without one leading member axis");
}

// a0 [(M,) B, W]; W1, W2 [(M,) L, W, W]; b1, b2 [(M,) L, W]: all with the member axis or none.
Shape stack_shape(ffi::Span<const int64_t> a0, ffi::Span<const int64_t> w1, ffi::Span<const int64_t> b1,
                  ffi::Span<const int64_t> w2, ffi::Span<const int64_t> b2) {
  const int64_t members = leading_members(a0, 2);
  const size_t lead = members > 0 ? 1 : 0;
  for (auto [dims, rank] : {std::pair{w1, 3}, {b1, 2}, {w2, 3}, {b2, 2}}) {
    if (leading_members(dims, rank) != members) {
      throw std::invalid_argument("every operand must have the same leading member axis, or none");
    }
  }
  auto tail = [&](ffi::Span<const int64_t> dims) { return std::vector<int64_t>(dims.begin() + lead, dims.end()); };
  const auto a = tail(a0), k1 = tail(w1), v1 = tail(b1), k2 = tail(w2), v2 = tail(b2);
  const Shape s{std::max<int64_t>(members, 1), k1[0], a[0], a[1]};
  for (const auto& dims : {k1, k2}) {
    if (dims[0] != s.blocks || dims[1] != s.width || dims[2] != s.width) {
      throw std::invalid_argument("kernels must be [L, W, W] with the input's width W");
    }
  }
  for (const auto& dims : {v1, v2}) {
    if (dims[0] != s.blocks || dims[1] != s.width) throw std::invalid_argument("biases must be [L, W]");
  }
  return s;
}

// `dims` must be `wanted`, after the member axis when the operands have one.
void expect_dims(ffi::Span<const int64_t> dims, const Shape& s, bool with_members, std::vector<int64_t> wanted,
                 const char* what) {
  if (with_members) wanted.insert(wanted.begin(), s.members);
  if (std::vector<int64_t>(dims.begin(), dims.end()) != wanted) throw std::invalid_argument(what);
}

// Helper threads that stay awake (spinning) for a while after each call. Why not OpenMP: libgomp keeps one
// team per calling thread, XLA calls from several, and with more team threads than cores libgomp puts its
// workers to sleep at once; waking one took ~30 us per call, as long as a block's products here. The products
// inside run single-threaded (oneDNN's own OpenMP threading is turned off on these threads).
class Pool {
 public:
  static Pool& instance() {
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { current() = nullptr; }); });
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    if (current() == nullptr) current() = new Pool(omp_get_max_threads());
    return *current();
  }

  // body(thread, threads) on `threads` threads, this one included; the first exception is rethrown here.
  // A call that finds the helpers busy (another device's call) runs on its own thread alone.
  template <typename Body>
  void run(Body&& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    const int threads = busy.owns_lock() ? threads_ : 1;
    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto guarded_body = [&](int thread) {
      try {
        body(thread, threads);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    };
    if (threads > 1) {
      job_ = guarded_body;
      pending_.store(threads - 1);
      {
        std::lock_guard<std::mutex> lock(wake_);
        generation_.fetch_add(1, std::memory_order_release);
      }
      wakeup_.notify_all();
    }
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    guarded_body(0);
    omp_set_num_threads(saved);
    while (pending_.load(std::memory_order_acquire) > 0) _mm_pause();
    if (failure) std::rethrow_exception(failure);
  }

 private:
  static constexpr int64_t kSpinNs = 200000;  // covers the gaps between a training step's calls

  // Never destroyed: the helpers live with the process. A forked child has none of them and makes its own.
  static Pool*& current() {
    static Pool* pool = nullptr;
    return pool;
  }

  explicit Pool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i) std::thread([this, i] { serve(i); }).detach();
  }

  void serve(int thread) {
    omp_set_num_threads(1);
    uint64_t seen = 0;
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      while (generation_.load(std::memory_order_acquire) == seen &&
             std::chrono::steady_clock::now() - start < std::chrono::nanoseconds(kSpinNs)) {
        _mm_pause();
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(wake_);
        wakeup_.wait(lock, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      job_(thread);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  const int threads_;
  std::mutex busy_, wake_;
  std::condition_variable wakeup_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::function<void(int)> job_;
};

// Rows pass through the blocks in chunks of kChunkRows, a chunk on one thread. oneDNN's products can round a
// row differently for different row counts, so chunks fixed by the batch alone (not by how many threads,
// devices or processes share the work) keep every result bit-identical, however busy the pool is.
constexpr int64_t kChunkRows = 64;

// body(member, begin, end) for this thread's chunks [begin, end) of every member's `batch` rows; with one
// member, thread t takes chunks t, t + threads, ...
template <typename Body>
void for_each_chunk(const Shape& s, int thread, int threads, Body&& body) {
  const int64_t chunks = (s.batch + kChunkRows - 1) / kChunkRows;
  for (int64_t item = thread; item < s.members * chunks; item += threads) {
    const int64_t begin = (item % chunks) * kChunkRows;
    body(item / chunks, begin, std::min(s.batch, begin + kChunkRows));
  }
}

// This thread's share [begin, end) of `n` items.
std::pair<int64_t, int64_t> share(int64_t n, int thread, int threads) {
  const int64_t chunk = (n + threads - 1) / threads;
  return {std::min(n, thread * chunk), std::min(n, (thread + 1) * chunk)};
}

ffi::Error DenseStackForwardImpl(ffi::Buffer<ffi::F32> a0, ffi::Buffer<ffi::F32> w1, ffi::Buffer<ffi::F32> b1,
                                 ffi::Buffer<ffi::F32> w2, ffi::Buffer<ffi::F32> b2,
                                 ffi::ResultBuffer<ffi::F32> h, ffi::ResultBuffer<ffi::F32> out,
                                 bool residual) {
  return resnet_jax::guarded("oneDNN dense stack", [&] {
    const Shape s = stack_shape(a0.dimensions(), w1.dimensions(), b1.dimensions(), w2.dimensions(),
                                b2.dimensions());
    const bool with_members = a0.dimensions().size() == 3;
    for (auto dims : {h->dimensions(), out->dimensions()}) {
      expect_dims(dims, s, with_members, {s.blocks, s.batch, s.width}, "saved activations must be [L, B, W]");
    }
    Pool::instance().run([&](int thread, int threads) {
      for_each_chunk(s, thread, threads, [&](int64_t m, int64_t begin, int64_t end) {
        const int64_t rows = end - begin, offset = begin * s.width;
        const int64_t acts = m * s.blocks * s.act(), kers = m * s.blocks * s.ker(), vecs = m * s.blocks * s.width;
        const float* a = a0.typed_data() + m * s.act() + offset;
        for (int64_t l = 0; l < s.blocks; ++l) {
          float* hl = h->typed_data() + acts + l * s.act() + offset;
          float* outl = out->typed_data() + acts + l * s.act() + offset;
          gemm(false, false, rows, s.width, s.width, a, w1.typed_data() + kers + l * s.ker(), 0.0f, hl);
          add_bias_relu(hl, b1.typed_data() + vecs + l * s.width, nullptr, rows, s.width);
          gemm(false, false, rows, s.width, s.width, hl, w2.typed_data() + kers + l * s.ker(), 0.0f, outl);
          add_bias_relu(outl, b2.typed_data() + vecs + l * s.width, residual ? a : nullptr, rows, s.width);
          a = outl;
        }
      });
    });
  });
}

ffi::Error DenseStackBackwardImpl(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> a0, ffi::Buffer<ffi::F32> h,
                                  ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> w1,
                                  ffi::Buffer<ffi::F32> w2, ffi::ResultBuffer<ffi::F32> da0,
                                  ffi::ResultBuffer<ffi::F32> dw1, ffi::ResultBuffer<ffi::F32> db1,
                                  ffi::ResultBuffer<ffi::F32> dw2, ffi::ResultBuffer<ffi::F32> db2,
                                  ffi::ResultBuffer<ffi::F32> g_z1_buffer, ffi::ResultBuffer<ffi::F32> g_z2_buffer,
                                  bool residual) {
  return resnet_jax::guarded("oneDNN dense stack", [&] {
    const Shape s = stack_shape(a0.dimensions(), w1.dimensions(), db1->dimensions(), w2.dimensions(),
                                db2->dimensions());
    const bool with_members = a0.dimensions().size() == 3;
    for (auto dims : {h.dimensions(), out.dimensions(), g_z1_buffer->dimensions(), g_z2_buffer->dimensions()}) {
      expect_dims(dims, s, with_members, {s.blocks, s.batch, s.width}, "saved activations must be [L, B, W]");
    }
    for (auto dims : {g.dimensions(), da0->dimensions()}) {
      expect_dims(dims, s, with_members, {s.batch, s.width},
                  "gradients of the stack's input and output must be [B, W]");
    }
    // the gradients w.r.t. every block's two pre-activations, [(M,) L, B, W] each: scratch results, so that
    // XLA places them in its (reused) temporary memory instead of fresh pages every call
    float* g_z1 = g_z1_buffer->typed_data();
    float* g_z2 = g_z2_buffer->typed_data();
    // 1. back through the blocks, chunk by chunk of rows (the gradient w.r.t. the input lands in da0)
    Pool::instance().run([&](int thread, int threads) {
      for_each_chunk(s, thread, threads, [&](int64_t m, int64_t begin, int64_t end) {
        const int64_t rows = end - begin, offset = begin * s.width, n = rows * s.width;
        const int64_t acts = m * s.blocks * s.act(), kers = m * s.blocks * s.ker();
        float* g_a = da0->typed_data() + m * s.act() + offset;
        const float* g_m = g.typed_data() + m * s.act() + offset;
        std::copy(g_m, g_m + n, g_a);
        for (int64_t l = s.blocks - 1; l >= 0; --l) {
          float* gz2 = g_z2 + acts + l * s.act() + offset;
          float* gz1 = g_z1 + acts + l * s.act() + offset;
          // g_a becomes the gradient at block l's output pre-activation: kept as gz2 for the kernel
          // gradient and, in a residual block, the identity path's share of the input's gradient
          relu_grad(g_a, out.typed_data() + acts + l * s.act() + offset, gz2, n);
          gemm(false, true, rows, s.width, s.width, gz2, w2.typed_data() + kers + l * s.ker(), 0.0f, gz1);
          relu_grad(gz1, h.typed_data() + acts + l * s.act() + offset, nullptr, n);
          gemm(false, true, rows, s.width, s.width, gz1, w1.typed_data() + kers + l * s.ker(),
               residual ? 1.0f : 0.0f, g_a);
        }
      });
    });
    // 2. the kernel and bias gradients, sums over the whole batch: one (member, block, layer) per thread at a time
    Pool::instance().run([&](int thread, int threads) {
      const auto [begin, end] = share(s.members * 2 * s.blocks, thread, threads);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t m = job / (2 * s.blocks), l = job / 2 % s.blocks;
        const bool second = job % 2 == 1;
        const int64_t acts = m * s.blocks * s.act(), block = (m * s.blocks + l);
        const float* in = second ? h.typed_data() + acts + l * s.act()
                                 : (l == 0 ? a0.typed_data() + m * s.act()
                                           : out.typed_data() + acts + (l - 1) * s.act());
        const float* grad = (second ? g_z2 : g_z1) + acts + l * s.act();
        gemm(true, false, s.width, s.width, s.batch, in, grad, 0.0f,
             (second ? dw2 : dw1)->typed_data() + block * s.ker());
        column_sums(grad, (second ? db2 : db1)->typed_data() + block * s.width, s.batch, s.width);
      }
    });
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DenseStackForward, DenseStackForwardImpl,
                              (resnet_jax::float32_binding<5, 2>().Attr<bool>("residual")));
XLA_FFI_DEFINE_HANDLER_SYMBOL(DenseStackBackward, DenseStackBackwardImpl,
                              (resnet_jax::float32_binding<6, 7>().Attr<bool>("residual")));
