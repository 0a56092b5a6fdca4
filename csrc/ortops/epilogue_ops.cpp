// The elementwise work between an encoder's matrix products, one pass each (epilogues.cpp):
//
// `ai.embedserve.BiasGelu`: inputs 0 x [..., cols], 1 bias [cols]; GELU (erf form) of x + bias.
// `ai.embedserve.BiasResidualLayerNorm`: inputs 0 x [..., cols], 1 bias [cols], 2 residual (x's
// shape), 3 gamma [cols], 4 beta [cols] (optional); attribute epsilon. LayerNorm over the last
// axis of (x + bias) + residual.

#include <algorithm>

#include "embedserve/epilogues.hpp"
#include "ort_calls.hpp"

namespace embedserve::ort {
namespace {

constexpr std::size_t kRowsPerTask = 16;  // rows handed to one thread at a time

bool is_vector(const Tensor& t, std::int64_t cols) { return t.rank == 1 && t.dims[0] == cols; }

// x as rows of its last axis, handed out kRowsPerTask at a time.
struct Rows {
    const Tensor* x;
    std::size_t rows = 0;
    std::size_t cols = 0;

    struct Slice {
        std::size_t offset;  // in floats, from the start of x (and of any tensor of x's shape)
        std::size_t count;   // rows
    };

    std::size_t tasks() const { return (rows + kRowsPerTask - 1) / kRowsPerTask; }
    Slice slice(std::size_t task) const {
        const std::size_t first = task * kRowsPerTask;
        return {first * cols, std::min(kRowsPerTask, rows - first)};
    }
};

Status* read_rows(const char* op, KernelContext* context, Tensor& x, Rows& rows) {
    if (Status* s = read_input(context, 0, x)) return s;
    if (x.rank < 1 || x.dims[x.rank - 1] <= 0) return error(op, "x must have a last axis");
    rows.x = &x;
    rows.cols = static_cast<std::size_t>(x.dims[x.rank - 1]);
    rows.rows = static_cast<std::size_t>(x.elements()) / rows.cols;
    return nullptr;
}

struct GeluWork {
    Rows rows;
    const float* bias;
    float* out;
};

void gelu_task(void* data, std::size_t task) noexcept {
    const auto& w = *static_cast<const GeluWork*>(data);
    const Rows::Slice s = w.rows.slice(task);
    bias_gelu(w.rows.x->floats() + s.offset, w.bias, s.count, w.rows.cols, w.out + s.offset);
}

struct BiasGelu {
    static constexpr const char* kName = "BiasGelu";
    static constexpr ElementType kInputs[2] = {kFloat, kFloat};
    static bool optional(std::size_t) { return false; }

    static Status* create(const KernelInfo*, void** out) noexcept {
        *out = new BiasGelu();
        return nullptr;
    }

    static Status* compute(void*, KernelContext* context) noexcept {
        Tensor x, bias;
        GeluWork work{};
        if (Status* s = read_rows(kName, context, x, work.rows)) return s;
        if (Status* s = read_input(context, 1, bias)) return s;
        if (!is_vector(bias, x.dims[x.rank - 1])) return error(kName, "bias must be [cols]");
        work.bias = bias.floats();
        if (Status* s = make_output(context, 0, x.dims, x.rank, &work.out)) return s;
        return parallel_for(context, gelu_task, work.rows.tasks(), &work);
    }
};

struct NormWork {
    Rows rows;
    const float* bias;
    const float* residual;
    const float* gamma;
    const float* beta;
    float epsilon;
    float* out;
};

void norm_task(void* data, std::size_t task) noexcept {
    const auto& w = *static_cast<const NormWork*>(data);
    const Rows::Slice s = w.rows.slice(task);
    bias_residual_layer_norm(w.rows.x->floats() + s.offset, w.bias, w.residual + s.offset,
                             w.gamma, w.beta, w.epsilon, s.count, w.rows.cols, w.out + s.offset);
}

struct BiasResidualLayerNorm {
    static constexpr const char* kName = "BiasResidualLayerNorm";
    static constexpr ElementType kInputs[5] = {kFloat, kFloat, kFloat, kFloat, kFloat};
    static bool optional(std::size_t index) { return index == 4; }

    float epsilon = 1e-5f;

    static Status* create(const KernelInfo* info, void** out) noexcept {
        auto* kernel = new BiasResidualLayerNorm();
        kernel->epsilon = float_attribute(info, "epsilon", 1e-5f);
        *out = kernel;
        return nullptr;
    }

    static Status* compute(void* state, KernelContext* context) noexcept {
        Tensor x, bias, residual, gamma, beta;
        NormWork work{};
        if (Status* s = read_rows(kName, context, x, work.rows)) return s;
        Tensor* rest[4] = {&bias, &residual, &gamma, &beta};
        for (std::size_t i = 0; i < 4; ++i) {
            if (Status* s = read_input(context, i + 1, *rest[i])) return s;
        }
        const std::int64_t cols = x.dims[x.rank - 1];
        if (!is_vector(bias, cols) || !is_vector(gamma, cols) ||
            (beta.data != nullptr && !is_vector(beta, cols))) {
            return error(kName, "bias, gamma and beta must be [cols]");
        }
        if (residual.rank != x.rank || residual.elements() != x.elements()) {
            return error(kName, "residual must have x's shape");
        }
        work.bias = bias.floats();
        work.residual = residual.floats();
        work.gamma = gamma.floats();
        work.beta = beta.floats();
        work.epsilon = static_cast<const BiasResidualLayerNorm*>(state)->epsilon;
        if (Status* s = make_output(context, 0, x.dims, x.rank, &work.out)) return s;
        return parallel_for(context, norm_task, work.rows.tasks(), &work);
    }
};

const CustomOp kBiasGelu = describe<BiasGelu>();
const CustomOp kNorm = describe<BiasResidualLayerNorm>();

}  // namespace

const CustomOp* bias_gelu_op() noexcept { return &kBiasGelu; }
const CustomOp* bias_residual_layer_norm_op() noexcept { return &kNorm; }

}  // namespace embedserve::ort
