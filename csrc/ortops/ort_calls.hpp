#pragma once

// What every op in this library does through ONNX Runtime's C ABI (ort_abi.hpp): read inputs
// and attributes, make outputs, report errors, share work with the session's threads, and
// describe itself in an OrtCustomOp table.

#include <cstdint>
#include <string>

#include "embedserve/ort_abi.hpp"

namespace embedserve::ort {

/// The function table ONNX Runtime handed RegisterCustomOps.
inline const void* const* g_api = nullptr;

template <class Fn>
Fn api(Slot slot) {
    return reinterpret_cast<Fn>(const_cast<void*>(g_api[slot]));
}

/// An error status naming the op, which ONNX Runtime turns into the run's exception.
Status* error(const char* op, const std::string& message) noexcept;

/// Drops a status nobody reads (an optional attribute that is absent).
void release(Status* status) noexcept;

/// A float or int32 input: its data and dimensions; null data for an absent optional input.
struct Tensor {
    const void* data = nullptr;
    std::int64_t dims[4] = {};
    std::size_t rank = 0;

    const float* floats() const { return static_cast<const float*>(data); }
    std::int64_t elements() const;
};

Status* read_input(KernelContext* context, std::size_t index, Tensor& out) noexcept;

/// Output `index` with these dimensions, its data in `out`.
Status* make_output(KernelContext* context, std::size_t index, const std::int64_t* dims,
                    std::size_t rank, float** out) noexcept;

/// `fn(data, i)` for i in [0, total) on the session's intra-op threads (inline on one thread).
Status* parallel_for(KernelContext* context, void (*fn)(void*, std::size_t), std::size_t total,
                     void* data) noexcept;

/// An integer or float attribute; `fallback` when the node has none.
std::int64_t int_attribute(const KernelInfo* info, const char* name, std::int64_t fallback) noexcept;
float float_attribute(const KernelInfo* info, const char* name, float fallback) noexcept;

/// Shape inference for an op whose output 0 has input 0's type and shape. A dimension the
/// input has no size or name for gets a name: a bare -1 would read as a fixed size.
Status* same_shape_as_input(const CustomOp*, ShapeInferContext* context) noexcept;

/// The OrtCustomOp table of an op type `Op`, which provides: kName, kInputs (element types),
/// optional(index), create(info, kernel) and compute(kernel, context). Every op this library
/// has runs on the CPU, has one float output, and takes its output shape from input 0.
template <class Op>
CustomOp describe() {
    CustomOp op{};
    op.version = 17;
    op.create_kernel = [](const CustomOp*, const void* const*, const KernelInfo* info) noexcept {
        void* kernel = nullptr;
        release(Op::create(info, &kernel));
        return kernel;
    };
    op.get_name = [](const CustomOp*) noexcept { return Op::kName; };
    op.get_execution_provider_type = [](const CustomOp*) noexcept {
        return "CPUExecutionProvider";
    };
    op.get_input_type = [](const CustomOp*, std::size_t i) noexcept { return Op::kInputs[i]; };
    op.get_input_type_count = [](const CustomOp*) noexcept {
        return sizeof(Op::kInputs) / sizeof(Op::kInputs[0]);
    };
    op.get_output_type = [](const CustomOp*, std::size_t) noexcept { return kFloat; };
    op.get_output_type_count = [](const CustomOp*) noexcept { return std::size_t{1}; };
    op.kernel_compute = [](void* kernel, KernelContext* context) noexcept {
        release(Op::compute(kernel, context));
    };
    op.kernel_destroy = [](void* kernel) noexcept { delete static_cast<Op*>(kernel); };
    op.get_input_characteristic = [](const CustomOp*, std::size_t i) noexcept {
        return Op::optional(i) ? kOptional : kRequired;
    };
    op.get_output_characteristic = [](const CustomOp*, std::size_t) noexcept { return kRequired; };
    op.get_input_memory_type = [](const CustomOp*, std::size_t) noexcept { return 0; };
    op.get_variadic_input_min_arity = [](const CustomOp*) noexcept { return 1; };
    op.get_variadic_input_homogeneity = [](const CustomOp*) noexcept { return 1; };
    op.get_variadic_output_min_arity = [](const CustomOp*) noexcept { return 1; };
    op.get_variadic_output_homogeneity = [](const CustomOp*) noexcept { return 1; };
    op.create_kernel_v2 = [](const CustomOp*, const void* const*, const KernelInfo* info,
                             void** kernel) noexcept { return Op::create(info, kernel); };
    op.kernel_compute_v2 = [](void* kernel, KernelContext* context) noexcept {
        return Op::compute(kernel, context);
    };
    op.infer_output_shape = same_shape_as_input;
    return op;
}

/// The ops, one per file.
const CustomOp* padded_attention_op() noexcept;
const CustomOp* bias_gelu_op() noexcept;
const CustomOp* bias_residual_layer_norm_op() noexcept;

}  // namespace embedserve::ort
