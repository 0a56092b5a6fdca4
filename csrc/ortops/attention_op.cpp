// `ai.embedserve.PaddedAttention`: the attention core (models/fused_attention.py writes it) run
// by embedserve's kernel (attention.cpp).
//
// Inputs, in com.microsoft.MultiHeadAttention's positions so the graph pass writes either op:
// 0 query, 1 key, 2 value ([batch, seq, heads * head_dim] float), 3 bias ([3 * width], q|k|v,
// optional), 4 key padding mask ([batch, seq] int32), 5 attention bias ([1 or batch, heads,
// seq, seq], optional). Attributes: num_heads, scale (default 1/sqrt(head_dim)).

#include <cmath>

#include "embedserve/attention.hpp"
#include "ort_calls.hpp"

namespace embedserve::ort {
namespace {

constexpr const char* kOp = "PaddedAttention";

struct Work {
    AttentionShape shape;
    AttentionInputs inputs;
    float* out;
};

void run_unit(void* data, std::size_t unit) noexcept {
    const Work& work = *static_cast<const Work*>(data);
    attention_unit(work.shape, work.inputs, unit, work.out);
}

bool same_rows(const Tensor& t, std::int64_t batch, std::int64_t seq, std::int64_t width) {
    return t.rank == 3 && t.dims[0] == batch && t.dims[1] == seq && t.dims[2] == width;
}

struct PaddedAttention {
    static constexpr const char* kName = kOp;
    static constexpr ElementType kInputs[6] = {kFloat, kFloat, kFloat, kFloat, kInt32, kFloat};
    static bool optional(std::size_t index) { return index == 3 || index == 5; }

    std::int64_t heads = 0;
    float scale = 0.0f;  // 0: 1/sqrt(head_dim)

    static Status* create(const KernelInfo* info, void** out) noexcept {
        auto* kernel = new PaddedAttention();
        kernel->heads = int_attribute(info, "num_heads", 0);
        kernel->scale = float_attribute(info, "scale", 0.0f);
        if (kernel->heads <= 0) {
            delete kernel;
            return error(kOp, "num_heads must be given and positive");
        }
        *out = kernel;
        return nullptr;
    }

    static Status* compute(void* state, KernelContext* context) noexcept {
        const auto& kernel = *static_cast<const PaddedAttention*>(state);
        Tensor q, k, v, bias, mask, position;
        Tensor* inputs[6] = {&q, &k, &v, &bias, &mask, &position};
        for (std::size_t i = 0; i < 6; ++i) {
            if (Status* s = read_input(context, i, *inputs[i])) return s;
        }
        if (q.rank != 3 || q.dims[2] % kernel.heads != 0) {
            return error(kOp, "query must be [batch, seq, heads * head_dim]");
        }
        const std::int64_t batch = q.dims[0], seq = q.dims[1], width = q.dims[2];
        if (!same_rows(k, batch, seq, width) || !same_rows(v, batch, seq, width)) {
            return error(kOp, "key and value must have the query's shape (no separate key length)");
        }
        if (mask.rank != 2 || mask.dims[0] != batch || mask.dims[1] != seq) {
            return error(kOp, "key padding mask must be [batch, seq]");
        }
        if (bias.data != nullptr && (bias.rank != 1 || bias.dims[0] != 3 * width)) {
            return error(kOp, "bias must be [3 * width]");
        }
        if (position.data != nullptr &&
            (position.rank != 4 || (position.dims[0] != 1 && position.dims[0] != batch) ||
             position.dims[1] != kernel.heads || position.dims[2] != seq ||
             position.dims[3] != seq)) {
            return error(kOp, "attention bias must be [1 or batch, heads, seq, seq]");
        }

        Work work{};
        work.shape.batch = static_cast<std::size_t>(batch);
        work.shape.seq = static_cast<std::size_t>(seq);
        work.shape.heads = static_cast<std::size_t>(kernel.heads);
        work.shape.head_dim = static_cast<std::size_t>(width / kernel.heads);
        work.shape.scale = kernel.scale != 0.0f
                               ? kernel.scale
                               : 1.0f / std::sqrt(static_cast<float>(work.shape.head_dim));
        work.inputs.q = q.floats();
        work.inputs.k = k.floats();
        work.inputs.v = v.floats();
        if (bias.data != nullptr) {
            work.inputs.q_bias = bias.floats();
            work.inputs.v_bias = bias.floats() + 2 * width;
        }
        work.inputs.mask = static_cast<const std::int32_t*>(mask.data);
        work.inputs.position_bias = position.floats();
        work.inputs.position_bias_batch =
            position.data != nullptr ? static_cast<std::size_t>(position.dims[0]) : 0;
        const std::int64_t dims[3] = {batch, seq, width};
        if (Status* s = make_output(context, 0, dims, 3, &work.out)) return s;
        // The (sequence, head) units are independent: the session's threads share them.
        return parallel_for(context, run_unit, work.shape.batch * work.shape.heads, &work);
    }
};

const CustomOp kTable = describe<PaddedAttention>();

}  // namespace

const CustomOp* padded_attention_op() noexcept { return &kTable; }

}  // namespace embedserve::ort
