// The only file that knows about Python: argument checks, array conversion, GIL handling and
// result objects. The loops live in pooling.cpp / normalize.cpp / encode.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "embedserve/encode.hpp"
#include "embedserve/normalize.hpp"
#include "embedserve/pooling.hpp"

namespace py = pybind11;
namespace es = embedserve;

namespace {

/// NumPy's ALIGNED flag, which pybind11 names only in its detail namespace. Without it, ensure()
/// passes through a C-contiguous array whose items are not at aligned addresses (np.frombuffer
/// at an odd offset, a packed record's field), which the kernels may not read (undefined
/// behaviour; an SSE instruction with a memory operand faults on one); with it NumPy copies.
constexpr int aligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;
using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast | aligned>;
using i64_array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast | aligned>;

/// "(2, 3, 4)", "(5,)" or "()": a shape as Python prints it.
std::string shape_of(const py::array& a) {
    std::string text = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i != 0) {
            text += ", ";
        }
        text += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) {
        text += ",";
    }
    return text + ")";
}

/// "float64", "int32", ...: the dtype as NumPy names it.
std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

/// Wraps any array-like as an ndarray without changing its dtype or copying when it already is one.
py::array as_ndarray(const py::object& obj, const char* name) {
    py::array arr = py::array::ensure(obj);
    if (!arr) {
        throw py::value_error(std::string(name) + " must be an array-like of numbers, got " +
                              py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    }
    return arr;
}

/// Element stride of axis `axis`; only called on aligned arrays of `T`.
template <class T>
std::ptrdiff_t element_stride(const py::array& a, py::ssize_t axis) {
    return static_cast<std::ptrdiff_t>(a.strides(axis) / static_cast<py::ssize_t>(sizeof(T)));
}

/// Checks that `obj` is a 2-D floating array, then returns it as C-contiguous float32.
f32_array float_matrix(const py::object& obj, const char* name) {
    const py::array arr = as_ndarray(obj, name);
    if (arr.ndim() != 2) {
        throw py::value_error(std::string(name) + " must be a 2-D [n, d] array, got shape " +
                              shape_of(arr));
    }
    if (arr.dtype().kind() != 'f') {
        throw py::value_error(std::string(name) +
                              " must be float32 (float16/float64 are cast to float32), got " +
                              dtype_of(arr) + " with shape " + shape_of(arr));
    }
    f32_array out = f32_array::ensure(arr);
    if (!out) {
        throw py::value_error(std::string(name) + " could not be converted to float32, shape " +
                              shape_of(arr));
    }
    return out;
}

/// Resolves `dimensions` against the row length d: None keeps all d columns. Any integer
/// (Python int, NumPy integer: whatever has __index__) is taken; a bool is refused (Python's
/// True is an int, and would otherwise cut every row to one column). An int too big for
/// long long is out of range like any other, not pybind11's cast error.
std::size_t resolve_dimensions(const py::object& dimensions, py::ssize_t d) {
    if (dimensions.is_none()) {
        return static_cast<std::size_t>(d);
    }
    if (py::isinstance<py::bool_>(dimensions) || PyIndex_Check(dimensions.ptr()) == 0) {
        throw py::type_error("dimensions must be an int or None, got " +
                             py::str(py::type::of(dimensions).attr("__name__")).cast<std::string>());
    }
    const auto index = py::reinterpret_steal<py::int_>(PyNumber_Index(dimensions.ptr()));
    if (!index) {
        throw py::error_already_set();
    }
    int overflow = 0;
    const long long k = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (overflow != 0 || k < 1 || k > static_cast<long long>(d)) {
        throw py::value_error("dimensions must be between 1 and " + std::to_string(d) + ", got " +
                              py::str(index).cast<std::string>());
    }
    return static_cast<std::size_t>(k);
}

/// Maps a mode name to pool_mode; ValueError lists the allowed names.
es::pool_mode parse_pool_mode(const std::string& mode) {
    if (mode == "mean") {
        return es::pool_mode::mean;
    }
    if (mode == "cls") {
        return es::pool_mode::cls;
    }
    if (mode == "last") {
        return es::pool_mode::last;
    }
    if (mode == "max") {
        return es::pool_mode::max;
    }
    if (mode == "mean_sqrt_len") {
        return es::pool_mode::mean_sqrt_len;
    }
    if (mode == "weightedmean") {
        return es::pool_mode::weightedmean;
    }
    throw py::value_error("unknown pooling mode '" + mode +
                          "'; allowed modes are 'mean', 'cls', 'last', 'max', 'mean_sqrt_len', "
                          "'weightedmean'");
}

/// A new uninitialised C-contiguous float32 [rows, cols] array.
py::array_t<float> new_matrix(std::size_t rows, std::size_t cols) {
    return py::array_t<float>(std::vector<py::ssize_t>{static_cast<py::ssize_t>(rows),
                                                       static_cast<py::ssize_t>(cols)});
}

/// A fresh ASCII str of `length` chars whose buffer the caller fills before anyone else sees it.
py::str new_ascii_str(std::size_t length, char*& buffer) {
    PyObject* s = PyUnicode_New(static_cast<Py_ssize_t>(length), 127);
    if (s == nullptr) {
        throw py::error_already_set();
    }
    buffer = reinterpret_cast<char*>(PyUnicode_1BYTE_DATA(s));
    return py::reinterpret_steal<py::str>(s);
}

// ----------------------------------------------------------------------------------------------

/// Binding of es::pool_f32 / es::pool_f16; see the docstring in PYBIND11_MODULE.
py::array_t<float> pool(const py::object& hidden_obj, const py::object& mask_obj,
                        const std::string& mode_name, const py::object& skip_obj) {
    const py::array hidden = as_ndarray(hidden_obj, "hidden");
    if (hidden.ndim() != 3) {
        throw py::value_error("hidden must be a 3-D [batch, seq, dim] array, got shape " +
                              shape_of(hidden));
    }
    const char kind = hidden.dtype().kind();
    const bool is_half = kind == 'f' && hidden.dtype().itemsize() == 2;
    if (kind != 'f') {
        throw py::value_error(
            "hidden must be float32 or float16 (float64 is cast to float32), got " +
            dtype_of(hidden) + " with shape " + shape_of(hidden));
    }
    const py::array mask = as_ndarray(mask_obj, "attention_mask");
    const py::ssize_t batch = hidden.shape(0);
    const py::ssize_t seq = hidden.shape(1);
    const py::ssize_t dim = hidden.shape(2);
    if (mask.ndim() != 2 || mask.shape(0) != batch || mask.shape(1) != seq) {
        throw py::value_error("attention_mask must have shape (" + std::to_string(batch) + ", " +
                              std::to_string(seq) + ") to match hidden " + shape_of(hidden) +
                              ", got shape " + shape_of(mask));
    }
    const char mask_kind = mask.dtype().kind();
    if (mask_kind != 'i' && mask_kind != 'u' && mask_kind != 'b') {
        throw py::value_error("attention_mask must be an integer or bool array, got " +
                              dtype_of(mask) + " with shape " + shape_of(mask));
    }
    const es::pool_mode mode = parse_pool_mode(mode_name);

    const i64_array mask64 = i64_array::ensure(mask);
    if (!mask64) {
        throw py::value_error("attention_mask could not be converted to int64, shape " +
                              shape_of(mask));
    }
    i64_array skip64;
    const std::int64_t* skip_data = nullptr;
    if (!skip_obj.is_none()) {
        const py::array skip = as_ndarray(skip_obj, "skip");
        const char skip_kind = skip.dtype().kind();
        if (skip.ndim() != 1 || skip.shape(0) != batch || (skip_kind != 'i' && skip_kind != 'u')) {
            throw py::value_error("skip must be None or a 1-D integer array of shape (" +
                                  std::to_string(batch) + ",), one count per row, got " +
                                  dtype_of(skip) + " with shape " + shape_of(skip));
        }
        skip64 = i64_array::ensure(skip);
        if (!skip64) {
            throw py::value_error("skip could not be converted to int64, shape " + shape_of(skip));
        }
        skip_data = skip64.data();
    }
    py::array_t<float> out = new_matrix(static_cast<std::size_t>(batch),
                                        static_cast<std::size_t>(dim));
    float* out_data = out.mutable_data();
    const std::int64_t* mask_data = mask64.data();

    es::pool_geometry geometry{};
    geometry.batch = static_cast<std::size_t>(batch);
    geometry.seq = static_cast<std::size_t>(seq);
    geometry.dim = static_cast<std::size_t>(dim);
    geometry.mask_batch_stride = element_stride<std::int64_t>(mask64, 0);

    if (is_half) {
        // Native-order, aligned, C-contiguous float16, read as raw bits; no float32 copy.
        const py::array half = py::module_::import("numpy").attr("require")(
            hidden, "float16", py::make_tuple("C", "A"));
        geometry.hidden_batch_stride = element_stride<std::uint16_t>(half, 0);
        geometry.hidden_seq_stride = element_stride<std::uint16_t>(half, 1);
        const auto* data = static_cast<const std::uint16_t*>(half.data());
        // Safe without the GIL: only raw buffers of arrays this frame keeps alive are touched.
        py::gil_scoped_release release;
        es::pool_f16(data, mask_data, skip_data, geometry, mode, out_data);
    } else {
        const f32_array h = f32_array::ensure(hidden);
        if (!h) {
            throw py::value_error("hidden could not be converted to float32, shape " +
                                  shape_of(hidden));
        }
        geometry.hidden_batch_stride = element_stride<float>(h, 0);
        geometry.hidden_seq_stride = element_stride<float>(h, 1);
        const float* data = h.data();
        // Safe without the GIL: only raw buffers of arrays this frame keeps alive are touched.
        py::gil_scoped_release release;
        es::pool_f32(data, mask_data, skip_data, geometry, mode, out_data);
    }
    return out;
}

/// Binding of es::cut_and_normalize into a new array.
py::array_t<float> cut_and_normalize(const py::object& x_obj,
                                     const py::object& dimensions,
                                     bool normalize) {
    const f32_array x = float_matrix(x_obj, "x");
    const std::size_t k = resolve_dimensions(dimensions, x.shape(1));
    const auto n = static_cast<std::size_t>(x.shape(0));
    py::array_t<float> out = new_matrix(n, k);
    float* out_data = out.mutable_data();
    const float* x_data = x.data();
    const std::ptrdiff_t x_stride = element_stride<float>(x, 0);
    const auto out_stride = static_cast<std::ptrdiff_t>(k);
    {
        // Safe without the GIL: only raw buffers of arrays this frame keeps alive are touched.
        py::gil_scoped_release release;
        es::cut_and_normalize(x_data, n, k, x_stride, normalize, out_data, out_stride);
    }
    return out;
}

/// Binding of es::cut_and_normalize writing into x itself; returns the view x[:, :k].
py::object cut_and_normalize_inplace(const py::object& x_obj,
                                     const py::object& dimensions,
                                     bool normalize) {
    if (!py::isinstance<py::array>(x_obj)) {
        throw py::value_error(
            "x must be a writable C-contiguous float32 numpy array for the in-place variant, "
            "got " + py::str(py::type::of(x_obj).attr("__name__")).cast<std::string>());
    }
    py::array x = py::reinterpret_borrow<py::array>(x_obj);
    if (x.ndim() != 2) {
        throw py::value_error("x must be a 2-D [n, d] array, got shape " + shape_of(x));
    }
    if (!py::isinstance<py::array_t<float>>(x)) {
        throw py::value_error("x must be native float32 for the in-place variant, got " +
                              dtype_of(x) + " with shape " + shape_of(x) +
                              "; cut_and_normalize returns a converted copy");
    }
    if ((x.flags() & py::array::c_style) == 0 || !x.writeable() || (x.flags() & aligned) == 0) {
        const char* what = !x.writeable()                            ? "read-only"
                           : (x.flags() & py::array::c_style) == 0 ? "non-contiguous"
                                                                   : "misaligned";
        throw py::value_error(
            "x must be writable, C-contiguous and aligned for the in-place variant, got a " +
            std::string(what) + " array of shape " + shape_of(x) +
            "; cut_and_normalize returns a copy");
    }
    const std::size_t k = resolve_dimensions(dimensions, x.shape(1));
    const auto n = static_cast<std::size_t>(x.shape(0));
    float* data = static_cast<float*>(x.mutable_data());
    const std::ptrdiff_t stride = element_stride<float>(x, 0);
    {
        // Safe without the GIL: only the raw buffer of x, which the caller keeps alive.
        py::gil_scoped_release release;
        es::cut_and_normalize(data, n, k, stride, normalize, data, stride);
    }
    const py::slice all{py::none(), py::none(), py::none()};
    const py::slice head{0, static_cast<py::ssize_t>(k), 1};
    return x[py::make_tuple(all, head)];
}

/// Binding of es::encode_base64_rows; the kernel writes straight into the new strs.
py::list encode_base64(const py::object& x_obj) {
    const f32_array x = float_matrix(x_obj, "x");
    const auto n = static_cast<std::size_t>(x.shape(0));
    const auto d = static_cast<std::size_t>(x.shape(1));
    const std::size_t length = es::base64_length(d * sizeof(float));
    py::list rows(n);
    std::vector<char*> buffers(n);
    for (std::size_t r = 0; r < n; ++r) {
        py::str s = new_ascii_str(length, buffers[r]);
        PyList_SET_ITEM(rows.ptr(), static_cast<Py_ssize_t>(r), s.release().ptr());
    }
    const float* data = x.data();
    const std::ptrdiff_t stride = element_stride<float>(x, 0);
    {
        // Safe without the GIL: the strs are brand new and reachable only through `rows`, which
        // no other thread can see yet; their buffers are plain memory until we return.
        py::gil_scoped_release release;
        es::encode_base64_rows(data, n, d, stride, buffers.data());
    }
    return rows;
}

/// Binding of es::encode_json_rows; strs are made from the text after the GIL is back.
py::list encode_json(const py::object& x_obj) {
    const f32_array x = float_matrix(x_obj, "x");
    const auto n = static_cast<std::size_t>(x.shape(0));
    const auto d = static_cast<std::size_t>(x.shape(1));
    const float* data = x.data();
    const std::ptrdiff_t stride = element_stride<float>(x, 0);
    std::string text;
    std::vector<std::size_t> offsets;
    es::json_status status{};
    {
        // Safe without the GIL: reads x's buffer, writes C++-owned strings; no Python objects.
        py::gil_scoped_release release;
        status = es::encode_json_rows(data, n, d, stride, text, offsets);
    }
    if (!status.ok) {
        const char* what = std::isnan(status.value) ? "nan"
                           : status.value > 0      ? "inf"
                                                   : "-inf";
        throw py::value_error("x[" + std::to_string(status.row) + ", " +
                              std::to_string(status.col) + "] is " + what +
                              "; JSON has no representation for non-finite floats");
    }
    py::list rows(n);
    for (std::size_t r = 0; r < n; ++r) {
        char* buffer = nullptr;
        const std::size_t length = offsets[r + 1] - offsets[r];
        py::str s = new_ascii_str(length, buffer);
        std::memcpy(buffer, text.data() + offsets[r], length);
        PyList_SET_ITEM(rows.ptr(), static_cast<Py_ssize_t>(r), s.release().ptr());
    }
    return rows;
}

/// A new C-contiguous [rows, cols] int8 (is_signed) or uint8 array.
py::array new_byte_matrix(std::size_t rows, std::size_t cols, bool is_signed) {
    const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(rows),
                                         static_cast<py::ssize_t>(cols)};
    if (is_signed) {
        return py::array_t<std::int8_t>(shape);
    }
    return py::array_t<std::uint8_t>(shape);
}

/// Checks that `obj` is a 1-D float array of length d, returned as contiguous float32.
f32_array float_vector(const py::object& obj, const char* name, py::ssize_t d) {
    const py::array arr = as_ndarray(obj, name);
    if (arr.ndim() != 1 || arr.shape(0) != d || arr.dtype().kind() != 'f') {
        throw py::value_error(std::string(name) + " must be a 1-D float array of shape (" +
                              std::to_string(d) + ",) to match x, got " + dtype_of(arr) +
                              " with shape " + shape_of(arr));
    }
    return f32_array::ensure(arr);
}

/// Binding of es::quantize_rows.
py::array quantize(const py::object& x_obj, const py::object& lo_obj, const py::object& hi_obj,
                   bool is_signed) {
    const f32_array x = float_matrix(x_obj, "x");
    const f32_array lo = float_vector(lo_obj, "lo", x.shape(1));
    const f32_array hi = float_vector(hi_obj, "hi", x.shape(1));
    const auto n = static_cast<std::size_t>(x.shape(0));
    const auto d = static_cast<std::size_t>(x.shape(1));
    py::array out = new_byte_matrix(n, d, is_signed);
    auto* out_data = static_cast<std::uint8_t*>(out.mutable_data());
    const float* x_data = x.data();
    const float* lo_data = lo.data();
    const float* hi_data = hi.data();
    const std::ptrdiff_t stride = element_stride<float>(x, 0);
    {
        // Safe without the GIL: only raw buffers of arrays this frame keeps alive are touched.
        py::gil_scoped_release release;
        es::quantize_rows(x_data, n, d, stride, lo_data, hi_data, is_signed, out_data);
    }
    return out;
}

/// Binding of es::pack_sign_bits.
py::array pack_bits(const py::object& x_obj, bool is_signed) {
    const f32_array x = float_matrix(x_obj, "x");
    const auto n = static_cast<std::size_t>(x.shape(0));
    const auto d = static_cast<std::size_t>(x.shape(1));
    py::array out = new_byte_matrix(n, es::packed_bits_length(d), is_signed);
    auto* out_data = static_cast<std::uint8_t*>(out.mutable_data());
    const float* x_data = x.data();
    const std::ptrdiff_t stride = element_stride<float>(x, 0);
    {
        // Safe without the GIL: only raw buffers of arrays this frame keeps alive are touched.
        py::gil_scoped_release release;
        es::pack_sign_bits(x_data, n, d, stride, is_signed, out_data);
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() =
        "embedserve's compiled kernels: pooling, Matryoshka cut + L2 normalisation, and the "
        "base64 / JSON encodings of embedding rows. Every kernel checks shapes and dtypes first "
        "(ValueError naming the shape received) and releases the GIL while it loops.";

    m.def("pool", &pool, py::arg("hidden"), py::arg("attention_mask"), py::arg("mode"),
          py::arg("skip") = py::none(),
          R"doc(Pool [batch, seq, dim] hidden states into a new float32 [batch, dim] array.

hidden: float32 or float16 (read as float16, converted exactly per element; float64 is cast
to float32); any layout (non-contiguous input is copied). attention_mask: [batch, seq] integer
or bool; a token is present when its mask is nonzero. skip: None or int [batch], how many
leading present tokens of each row to leave out (a prompt; sentence-transformers'
include_prompt=False). The pooled tokens are the present ones after the skipped ones.

Modes (sentence-transformers' Pooling, sums accumulated in double): "mean" sum / max(n, 1e-9);
"mean_sqrt_len" sum / sqrt(max(n, 1e-9)); "weightedmean" weights t + 1 - first, where first is
the row's first present token (so left padding does not shift them); "max" element-wise
maximum (NaN where any pooled token has NaN); "cls" the first pooled token; "last" the pooled token with the highest index.
A row with nothing pooled gives zeros, except "cls", which gives token 0 as
sentence-transformers does. seq == 0 gives zeros; batch == 0 gives a (0, dim) array.

Raises ValueError for a wrong ndim, a mask shape other than hidden.shape[:2], a non-float
hidden or non-integer mask dtype, a skip that is not int [batch], or an unknown mode.)doc");

    m.def("cut_and_normalize", &cut_and_normalize, py::arg("x"),
          py::arg("dimensions") = py::none(), py::arg("normalize") = true,
          R"doc(Return a new float32 [n, dimensions] array: x[:, :dimensions], L2-normalised.

The cut comes first, then (if normalize) each cut row is divided by max(its L2 norm, 1e-12),
the norm accumulated in double, so an all-zero row stays zero. dimensions=None keeps all d
columns; otherwise it must be between 1 and d. x is 2-D floating (float16/float64 are cast).)doc");

    m.def("cut_and_normalize_", &cut_and_normalize_inplace, py::arg("x"),
          py::arg("dimensions") = py::none(), py::arg("normalize") = true,
          R"doc(In-place cut_and_normalize: returns the view x[:, :dimensions].

x must be a writable, C-contiguous, aligned, native float32 2-D numpy array (else
ValueError). The result is written into x[:, :dimensions]; columns past dimensions are left untouched.)doc");

    m.def("encode_base64", &encode_base64, py::arg("x"),
          R"doc(Encode each row of a 2-D float32 array as base64 of its little-endian float32 bytes.

Equal to [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in x], standard
alphabet with '=' padding. float16/float64 input is cast to float32 first.)doc");

    m.def("quantize", &quantize, py::arg("x"), py::arg("lo"), py::arg("hi"),
          py::arg("signed") = true,
          R"doc(Quantize each value of a 2-D float array to one byte, per column ranges [lo, hi].

Bit for bit sentence-transformers' quantize_embeddings(x, "int8" or "uint8", ranges=[lo, hi]):
in float32, step = (hi[j] - lo[j]) / 255 (1 where that is 0), q = clamp(floor((x - lo[j]) /
step), 0, 255) (0 where x is NaN). Returns int8 q - 128 when signed, else uint8 q, shape
[n, d]. lo and hi are 1-D of length d.)doc");

    m.def("pack_bits", &pack_bits, py::arg("x"), py::arg("signed") = true,
          R"doc(Pack the sign bits (x > 0) of each row 8 per byte, first column in the top bit.

Equal to numpy.packbits(x > 0, axis=1): uint8 [n, ceil(d / 8)] when not signed (Cohere's
"ubinary"), that minus 128 as int8 when signed ("binary").)doc");

    m.def("encode_json", &encode_json, py::arg("x"),
          R"doc(Encode each row of a 2-D float32 array as JSON array text "[a,b,...]" (no spaces).

Each number is the shortest decimal that reads back as the same float32 (std::to_chars);
integral values get ".0" (so -0.0 stays "-0.0"). Raises ValueError naming the row and column
of the first nan or inf, which JSON cannot represent. float16/float64 input is cast first.)doc");
}
