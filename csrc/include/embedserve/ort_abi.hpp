#pragma once

// The part of ONNX Runtime's C ABI this library calls, declared here instead of including
// onnxruntime_c_api.h (no wheel or package registry ships the header). The ABI is stable
// by design: OrtApi is a table of function pointers that only ever grows at its end, so a
// slot's index names a function in every release since it was added, and OrtCustomOp's layout
// is read up to the `version` its author sets. Every slot below is called on a path that
// tests/runtime/test_custom_attention.py and test_custom_epilogues.py run against the installed
// runtime, so a wrong index fails them.

#include <cstddef>
#include <cstdint>

namespace embedserve::ort {

struct Status;
struct KernelInfo;
struct KernelContext;
struct Value;
struct TensorInfo;
struct SessionOptions;
struct CustomOpDomain;
struct ShapeInferContext;

/// The runtime version whose table this library asks for (ONNX Runtime 1.20, the oldest the
/// package accepts); every slot below exists there.
constexpr std::uint32_t kApiVersion = 20;

/// Slots of OrtApi, by index.
enum Slot : std::size_t {
    kCreateStatus = 0,
    kCreateCustomOpDomain = 26,
    kCustomOpDomainAdd = 27,
    kAddCustomOpDomain = 28,
    kGetTensorMutableData = 51,
    kCreateTensorTypeAndShapeInfo = 57,
    kSetTensorElementType = 58,
    kSetDimensions = 59,
    kGetDimensionsCount = 61,
    kGetDimensions = 62,
    kGetSymbolicDimensions = 63,
    kGetTensorTypeAndShape = 65,
    kKernelInfoGetAttributeFloat = 85,
    kKernelInfoGetAttributeInt64 = 86,
    kKernelContextGetInputCount = 88,
    kKernelContextGetInput = 90,
    kKernelContextGetOutput = 91,
    kReleaseStatus = 93,
    kReleaseTensorTypeAndShapeInfo = 99,
    kShapeInferContextGetInputTypeShape = 268,
    kShapeInferContextSetOutputTypeShape = 270,
    kSetSymbolicDimensions = 271,
    kKernelContextParallelFor = 274,
};

/// OrtApiBase: the one symbol a custom-op library is handed.
struct ApiBase {
    const void* const* (*get_api)(std::uint32_t version) noexcept;
    const char* (*get_version_string)() noexcept;
};

enum ErrorCode : int { kOk = 0, kFail = 1, kInvalidArgument = 2 };
enum ElementType : int { kUndefined = 0, kFloat = 1, kInt32 = 6 };
enum Characteristic : int { kRequired = 0, kOptional = 1 };

/// OrtCustomOp, field by field. `version` 17 makes ONNX Runtime read the fields up to the op's
/// version range (optional inputs came with 8, variadic with 14, kernels that return a status
/// with 16, shape inference and versions with 17) and ignore the rest.
struct CustomOp {
    std::uint32_t version;
    void* (*create_kernel)(const CustomOp*, const void* const* api, const KernelInfo*) noexcept;
    const char* (*get_name)(const CustomOp*) noexcept;
    const char* (*get_execution_provider_type)(const CustomOp*) noexcept;
    ElementType (*get_input_type)(const CustomOp*, std::size_t) noexcept;
    std::size_t (*get_input_type_count)(const CustomOp*) noexcept;
    ElementType (*get_output_type)(const CustomOp*, std::size_t) noexcept;
    std::size_t (*get_output_type_count)(const CustomOp*) noexcept;
    void (*kernel_compute)(void* kernel, KernelContext*) noexcept;
    void (*kernel_destroy)(void* kernel) noexcept;
    Characteristic (*get_input_characteristic)(const CustomOp*, std::size_t) noexcept;
    Characteristic (*get_output_characteristic)(const CustomOp*, std::size_t) noexcept;
    int (*get_input_memory_type)(const CustomOp*, std::size_t) noexcept;
    int (*get_variadic_input_min_arity)(const CustomOp*) noexcept;
    int (*get_variadic_input_homogeneity)(const CustomOp*) noexcept;
    int (*get_variadic_output_min_arity)(const CustomOp*) noexcept;
    int (*get_variadic_output_homogeneity)(const CustomOp*) noexcept;
    Status* (*create_kernel_v2)(const CustomOp*, const void* const* api, const KernelInfo*,
                                void** kernel) noexcept;
    Status* (*kernel_compute_v2)(void* kernel, KernelContext*) noexcept;
    Status* (*infer_output_shape)(const CustomOp*, ShapeInferContext*) noexcept;
    int (*get_start_version)(const CustomOp*) noexcept;  // null: version 1
    int (*get_end_version)(const CustomOp*) noexcept;
    void* later_fields[4];  // in-place and alias maps: not read at 17
};

}  // namespace embedserve::ort
