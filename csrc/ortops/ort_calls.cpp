#include "ort_calls.hpp"

namespace embedserve::ort {

Status* error(const char* op, const std::string& message) noexcept {
    using Fn = Status* (*)(int, const char*) noexcept;
    return api<Fn>(kCreateStatus)(kInvalidArgument, (std::string(op) + ": " + message).c_str());
}

void release(Status* status) noexcept {
    using Fn = void (*)(Status*) noexcept;
    if (status != nullptr) api<Fn>(kReleaseStatus)(status);
}

std::int64_t Tensor::elements() const {
    std::int64_t n = 1;
    for (std::size_t i = 0; i < rank; ++i) n *= dims[i];
    return n;
}

Status* read_input(KernelContext* context, std::size_t index, Tensor& out) noexcept {
    using GetInputCount = Status* (*)(const KernelContext*, std::size_t*) noexcept;
    using GetInput = Status* (*)(const KernelContext*, std::size_t, const Value**) noexcept;
    using GetShape = Status* (*)(const Value*, TensorInfo**) noexcept;
    using GetCount = Status* (*)(const TensorInfo*, std::size_t*) noexcept;
    using GetDims = Status* (*)(const TensorInfo*, std::int64_t*, std::size_t) noexcept;
    using ReleaseInfo = void (*)(TensorInfo*) noexcept;
    using GetData = Status* (*)(Value*, void**) noexcept;

    std::size_t count = 0;
    if (Status* s = api<GetInputCount>(kKernelContextGetInputCount)(context, &count)) return s;
    if (index >= count) return nullptr;  // a trailing optional input left out of the node
    const Value* value = nullptr;
    if (Status* s = api<GetInput>(kKernelContextGetInput)(context, index, &value)) return s;
    if (value == nullptr) return nullptr;  // an optional input given as ""
    TensorInfo* info = nullptr;
    if (Status* s = api<GetShape>(kGetTensorTypeAndShape)(value, &info)) return s;
    Status* s = api<GetCount>(kGetDimensionsCount)(info, &out.rank);
    if (s == nullptr && out.rank > 4) s = error("input", "rank above 4");
    if (s == nullptr) s = api<GetDims>(kGetDimensions)(info, out.dims, out.rank);
    api<ReleaseInfo>(kReleaseTensorTypeAndShapeInfo)(info);
    if (s != nullptr) return s;
    void* data = nullptr;
    if (Status* d = api<GetData>(kGetTensorMutableData)(const_cast<Value*>(value), &data)) return d;
    out.data = data;
    return nullptr;
}

Status* make_output(KernelContext* context, std::size_t index, const std::int64_t* dims,
                    std::size_t rank, float** out) noexcept {
    using GetOutput = Status* (*)(KernelContext*, std::size_t, const std::int64_t*, std::size_t,
                                  Value**) noexcept;
    using GetData = Status* (*)(Value*, void**) noexcept;
    Value* value = nullptr;
    if (Status* s = api<GetOutput>(kKernelContextGetOutput)(context, index, dims, rank, &value)) {
        return s;
    }
    void* data = nullptr;
    if (Status* s = api<GetData>(kGetTensorMutableData)(value, &data)) return s;
    *out = static_cast<float*>(data);
    return nullptr;
}

Status* parallel_for(KernelContext* context, void (*fn)(void*, std::size_t), std::size_t total,
                     void* data) noexcept {
    using ParallelFor = Status* (*)(const KernelContext*, void (*)(void*, std::size_t),
                                    std::size_t, std::size_t, void*) noexcept;
    return api<ParallelFor>(kKernelContextParallelFor)(context, fn, total, 0, data);
}

std::int64_t int_attribute(const KernelInfo* info, const char* name, std::int64_t fallback) noexcept {
    using GetInt = Status* (*)(const KernelInfo*, const char*, std::int64_t*) noexcept;
    std::int64_t value = fallback;
    if (Status* s = api<GetInt>(kKernelInfoGetAttributeInt64)(info, name, &value)) {
        release(s);  // absent
        return fallback;
    }
    return value;
}

float float_attribute(const KernelInfo* info, const char* name, float fallback) noexcept {
    using GetFloat = Status* (*)(const KernelInfo*, const char*, float*) noexcept;
    float value = fallback;
    if (Status* s = api<GetFloat>(kKernelInfoGetAttributeFloat)(info, name, &value)) {
        release(s);  // absent
        return fallback;
    }
    return value;
}

Status* same_shape_as_input(const CustomOp*, ShapeInferContext* context) noexcept {
    using GetShape = Status* (*)(const ShapeInferContext*, std::size_t, TensorInfo**) noexcept;
    using SetShape = Status* (*)(const ShapeInferContext*, std::size_t, const TensorInfo*) noexcept;
    using GetCount = Status* (*)(const TensorInfo*, std::size_t*) noexcept;
    using GetDims = Status* (*)(const TensorInfo*, std::int64_t*, std::size_t) noexcept;
    using GetNames = Status* (*)(const TensorInfo*, const char**, std::size_t) noexcept;
    using CreateInfo = Status* (*)(TensorInfo**) noexcept;
    using SetType = Status* (*)(TensorInfo*, ElementType) noexcept;
    using SetDims = Status* (*)(TensorInfo*, const std::int64_t*, std::size_t) noexcept;
    using SetNames = Status* (*)(TensorInfo*, const char**, std::size_t) noexcept;
    using ReleaseInfo = void (*)(TensorInfo*) noexcept;
    static const char* const kNames[4] = {"dim0", "dim1", "dim2", "dim3"};

    TensorInfo* input = nullptr;  // owned by the context
    if (Status* s = api<GetShape>(kShapeInferContextGetInputTypeShape)(context, 0, &input)) return s;
    std::size_t rank = 0;
    if (Status* s = api<GetCount>(kGetDimensionsCount)(input, &rank)) return s;
    if (rank > 4) return error("shape inference", "rank above 4");
    std::int64_t dims[4] = {};
    const char* names[4] = {};
    if (Status* s = api<GetDims>(kGetDimensions)(input, dims, rank)) return s;
    if (Status* s = api<GetNames>(kGetSymbolicDimensions)(input, names, rank)) return s;
    for (std::size_t i = 0; i < rank; ++i) {
        if (dims[i] < 0 && (names[i] == nullptr || names[i][0] == '\0')) names[i] = kNames[i];
    }
    TensorInfo* output = nullptr;
    if (Status* s = api<CreateInfo>(kCreateTensorTypeAndShapeInfo)(&output)) return s;
    Status* s = api<SetType>(kSetTensorElementType)(output, kFloat);
    if (s == nullptr) s = api<SetDims>(kSetDimensions)(output, dims, rank);
    if (s == nullptr) s = api<SetNames>(kSetSymbolicDimensions)(output, names, rank);
    if (s == nullptr) s = api<SetShape>(kShapeInferContextSetOutputTypeShape)(context, 0, output);
    api<ReleaseInfo>(kReleaseTensorTypeAndShapeInfo)(output);
    return s;
}

}  // namespace embedserve::ort
