// ONNX Runtime custom-op library (runtime/custom_ops.py loads it with
// SessionOptions.register_custom_ops_library): the ops of domain `ai.embedserve`.

#include <mutex>

#include "embedserve/simd.hpp"
#include "ort_calls.hpp"

extern "C" __attribute__((visibility("default"))) embedserve::ort::Status* RegisterCustomOps(
    embedserve::ort::SessionOptions* options, const embedserve::ort::ApiBase* base) {
    using namespace embedserve::ort;
    using CreateDomain = Status* (*)(const char*, CustomOpDomain**) noexcept;
    using AddOp = Status* (*)(CustomOpDomain*, const CustomOp*) noexcept;
    using AddDomain = Status* (*)(SessionOptions*, CustomOpDomain*) noexcept;

    static std::mutex lock;
    // One domain for the process: ONNX Runtime keeps a pointer to it in every session options
    // it is added to, so it must outlive them all.
    static CustomOpDomain* domain = nullptr;
    std::lock_guard<std::mutex> held(lock);
    if (g_api == nullptr) {
        g_api = base->get_api(kApiVersion);
        if (g_api == nullptr) return nullptr;  // a runtime older than 1.20: nothing to add
    }
    if (domain == nullptr) {
        CustomOpDomain* made = nullptr;
        if (Status* s = api<CreateDomain>(kCreateCustomOpDomain)("ai.embedserve", &made)) return s;
        for (const CustomOp* op : {padded_attention_op(), bias_gelu_op(),
                                   bias_residual_layer_norm_op()}) {
            if (Status* s = api<AddOp>(kCustomOpDomainAdd)(made, op)) return s;
        }
        domain = made;
    }
    return api<AddDomain>(kAddCustomOpDomain)(options, domain);
}

// The instruction set the kernels run with in this process (runtime/custom_ops.kernel_isa):
// "avx512", "avx2", "avx" or "baseline".
extern "C" __attribute__((visibility("default"))) const char* EmbedserveKernelIsa() {
    return embedserve::isa_name(embedserve::kernel_isa());
}
