// GGUF metadata reader. The layout (GGUF v3, little-endian): magic "GGUF", u32 version, u64 tensor
// count, u64 key/value count, the key/value pairs (u64-length strings, u32 value types, arrays as
// u32 element type + u64 count + elements), then per tensor: name, u32 n_dims, u64 ne[n_dims],
// u32 ggml type, u64 offset; the data section starts at the next multiple of general.alignment.
// Every length is checked against the bytes left in the file before it is used.
#include "tpserve/partition/gguf.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <fstream>
#include <limits>

namespace tps {
namespace {

constexpr std::array<char, 4> kMagic = {'G', 'G', 'U', 'F'};
constexpr int kMaxDims = 4;  // GGML_MAX_DIMS
// Limits far above any real model file (a 256k vocabulary, a few thousand tensors, chat templates
// of kilobytes, metadata of tens of MiB): past them a count is corrupt, and refusing it keeps a
// damaged file from making the reader allocate gigabytes.
constexpr uint64_t kMaxTensors = uint64_t{1} << 20;
constexpr uint64_t kMaxKeys = uint64_t{1} << 16;
constexpr uint64_t kMaxArray = uint64_t{1} << 23;
constexpr uint64_t kMaxString = uint64_t{1} << 24;
constexpr uint64_t kMaxMetadata = uint64_t{1} << 28;

class Reader {
public:
    Reader(const std::filesystem::path& path) : path_(path.string()) {
        std::error_code ec;
        size_ = std::filesystem::file_size(path, ec);
        TPS_CHECK_AS(InputError, !ec, "{}: cannot read ({})", path_, ec.message());
        in_.open(path, std::ios::binary);
        TPS_CHECK_AS(InputError, in_.good(), "{}: cannot open", path_);
        in_.rdbuf()->pubsetbuf(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    }

    uint64_t pos() const { return pos_; }
    uint64_t size() const { return size_; }
    uint64_t left() const { return size_ - pos_; }
    const std::string& path() const { return path_; }
    void set_context(std::string ctx) { ctx_ = std::move(ctx); }

    void need(uint64_t n) {
        if (n > left()) {
            throw InputError(fmt::format("{}: truncated or corrupt: {} needs {} bytes at offset {} but "
                                         "only {} remain",
                                         path_, ctx_, n, pos_, left()));
        }
    }
    void bytes(void* dst, uint64_t n) {
        need(n);
        in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
        TPS_CHECK_AS(InputError, in_.good(), "{}: read error at offset {} ({})", path_, pos_, ctx_);
        pos_ += n;
    }
    template <class T>
    T pod() {
        T v;
        bytes(&v, sizeof v);
        return v;
    }
    std::string string() {
        const uint64_t n = pod<uint64_t>();
        if (n > kMaxString) {
            throw InputError(fmt::format("{}: corrupt: {} claims a string of {} bytes at offset {}", path_, ctx_, n,
                                         pos_ - 8));
        }
        need(n);
        std::string s(n, '\0');
        bytes(s.data(), n);
        return s;
    }
    void skip(uint64_t n) {
        need(n);
        in_.seekg(static_cast<std::streamoff>(n), std::ios::cur);
        pos_ += n;
    }

private:
    std::string path_;
    std::ifstream in_;
    std::array<char, 1 << 16> buffer_{};
    uint64_t size_ = 0;
    uint64_t pos_ = 0;
    std::string ctx_ = "the header";
};

// Smallest encoded size of a value of this type (a string is at least its 8-byte length).
uint64_t min_size(GgufType t) {
    switch (t) {
        case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
        case GgufType::u16: case GgufType::i16: return 2;
        case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
        case GgufType::u64: case GgufType::i64: case GgufType::f64: case GgufType::string: return 8;
        case GgufType::array: return 12;
    }
    return 1;
}

GgufType value_type(Reader& r) {
    const auto t = r.pod<uint32_t>();
    TPS_CHECK_AS(InputError, t <= static_cast<uint32_t>(GgufType::f64),
                 "{}: unknown GGUF value type {} at offset {}", r.path(), t, r.pos() - 4);
    return static_cast<GgufType>(t);
}

int64_t read_integer(Reader& r, GgufType t) {
    switch (t) {
        case GgufType::u8: return r.pod<uint8_t>();
        case GgufType::i8: return r.pod<int8_t>();
        case GgufType::u16: return r.pod<uint16_t>();
        case GgufType::i16: return r.pod<int16_t>();
        case GgufType::u32: return r.pod<uint32_t>();
        case GgufType::i32: return r.pod<int32_t>();
        case GgufType::u64: {
            const auto v = r.pod<uint64_t>();
            return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                       ? std::numeric_limits<int64_t>::max()
                       : static_cast<int64_t>(v);
        }
        case GgufType::i64: return r.pod<int64_t>();
        case GgufType::boolean: return r.pod<uint8_t>() != 0 ? 1 : 0;
        case GgufType::f32: case GgufType::f64: case GgufType::string: case GgufType::array:
            break;
    }
    return 0;
}

GgufValue read_value(Reader& r, GgufType t) {
    GgufValue v;
    v.type = t;
    switch (t) {
        case GgufType::f32: v.real = r.pod<float>(); break;
        case GgufType::f64: v.real = r.pod<double>(); break;
        case GgufType::string: v.str = r.string(); break;
        case GgufType::array: {
            v.array_type = value_type(r);
            TPS_CHECK_AS(InputError, v.array_type != GgufType::array,
                         "{}: nested GGUF arrays are not supported", r.path());
            v.array_size = r.pod<uint64_t>();
            TPS_CHECK_AS(InputError, v.array_size <= kMaxArray && v.array_size <= r.left() / min_size(v.array_type),
                         "{}: corrupt array: {} elements cannot fit in the {} bytes left (or exceed {})", r.path(),
                         v.array_size, r.left(), kMaxArray);
            const auto n = static_cast<size_t>(v.array_size);
            if (v.array_type == GgufType::string) {
                v.strs.reserve(n);
                for (size_t i = 0; i < n; ++i) v.strs.push_back(r.string());
            } else if (v.array_type == GgufType::f32 || v.array_type == GgufType::f64) {
                v.reals.reserve(n);
                for (size_t i = 0; i < n; ++i) {
                    v.reals.push_back(v.array_type == GgufType::f32 ? r.pod<float>() : r.pod<double>());
                }
            } else {
                v.ints.reserve(n);
                for (size_t i = 0; i < n; ++i) v.ints.push_back(read_integer(r, v.array_type));
            }
            break;
        }
        case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16:
        case GgufType::u32: case GgufType::i32: case GgufType::u64: case GgufType::i64:
        case GgufType::boolean:
            v.integer = read_integer(r, t);
            break;
    }
    return v;
}

}  // namespace

bool GgufValue::is_integer() const noexcept {
    switch (type) {
        case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16:
        case GgufType::u32: case GgufType::i32: case GgufType::u64: case GgufType::i64:
        case GgufType::boolean:
            return true;
        case GgufType::f32: case GgufType::f64: case GgufType::string: case GgufType::array:
            return false;
    }
    return false;
}

const GgufValue* GgufFile::find(const std::string& key) const {
    const auto it = kv.find(key);
    return it == kv.end() ? nullptr : &it->second;
}

std::optional<int64_t> GgufFile::integer(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    TPS_CHECK_AS(InputError, v->is_integer(), "{}: metadata {} must be an integer", path, key);
    return v->integer;
}

std::optional<double> GgufFile::real(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_integer()) return static_cast<double>(v->integer);
    TPS_CHECK_AS(InputError, v->is_real(), "{}: metadata {} must be a number", path, key);
    return v->real;
}

std::optional<std::string> GgufFile::string(const std::string& key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    TPS_CHECK_AS(InputError, v->type == GgufType::string, "{}: metadata {} must be a string", path, key);
    return v->str;
}

bool looks_like_gguf(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::array<char, 4> magic{};
    in.read(magic.data(), magic.size());
    return in.good() && magic == kMagic;
}

GgufFile read_gguf_metadata(const std::filesystem::path& path) {
    Reader r(path);
    GgufFile f;
    f.path = path.string();
    f.file_size = r.size();

    std::array<char, 4> magic{};
    r.bytes(magic.data(), magic.size());
    TPS_CHECK_AS(InputError, magic == kMagic, "{}: not a GGUF file (the first 4 bytes are not \"GGUF\")",
                 f.path);
    f.version = r.pod<uint32_t>();
    TPS_CHECK_AS(InputError, f.version == 2 || f.version == 3,
                 "{}: GGUF version {} is not supported (versions 2 and 3 are)", f.path, f.version);
    const auto n_tensors = r.pod<uint64_t>();
    const auto n_kv = r.pod<uint64_t>();
    // Each key/value takes at least 12 bytes and each tensor record at least 32: counts that the
    // file cannot hold are corrupt, and are refused before anything is reserved for them.
    TPS_CHECK_AS(InputError, n_kv <= kMaxKeys && n_kv <= r.left() / 13,
                 "{}: corrupt header: {} key/value pairs cannot fit in {} bytes", f.path, n_kv, r.left());
    TPS_CHECK_AS(InputError, n_tensors <= kMaxTensors && n_tensors <= r.left() / 32,
                 "{}: corrupt header: {} tensors cannot fit in {} bytes", f.path, n_tensors, r.left());

    for (uint64_t i = 0; i < n_kv; ++i) {
        r.set_context(fmt::format("key/value pair {} of {}", i, n_kv));
        std::string key = r.string();
        r.set_context(fmt::format("the value of \"{}\"", key));
        const GgufType t = value_type(r);
        TPS_CHECK_AS(InputError, !f.kv.contains(key), "{}: metadata key \"{}\" appears twice", f.path, key);
        f.kv[key] = read_value(r, t);
        TPS_CHECK_AS(InputError, r.pos() <= kMaxMetadata, "{}: corrupt: metadata runs past {} MiB at key \"{}\"",
                     f.path, kMaxMetadata >> 20, key);
    }
    if (const GgufValue* a = f.find("general.alignment")) {
        TPS_CHECK_AS(InputError, a->is_integer() && a->integer > 0 && (a->integer & (a->integer - 1)) == 0,
                     "{}: general.alignment must be a power of two", f.path);
        f.alignment = static_cast<uint64_t>(a->integer);
    }

    f.tensors.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        r.set_context(fmt::format("tensor record {} of {}", i, n_tensors));
        GgufTensorInfo t;
        t.name = r.string();
        r.set_context(fmt::format("tensor record {} of {} (\"{}\")", i, n_tensors, t.name));
        const auto n_dims = r.pod<uint32_t>();
        TPS_CHECK_AS(InputError, n_dims >= 1 && n_dims <= kMaxDims, "{}: tensor {} has {} dimensions (1..4 allowed)",
                     f.path, t.name, n_dims);
        int64_t elements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const auto ne = r.pod<uint64_t>();
            TPS_CHECK_AS(InputError, ne >= 1 && ne <= (uint64_t{1} << 40) &&
                                         static_cast<uint64_t>(elements) <= (uint64_t{1} << 50) / ne,
                         "{}: tensor {} has an impossible dimension {}", f.path, t.name, ne);
            t.ne.push_back(static_cast<int64_t>(ne));
            elements *= static_cast<int64_t>(ne);
        }
        t.ggml_type = r.pod<uint32_t>();
        t.offset = r.pod<uint64_t>();
        const auto dt = dtype_from_ggml(t.ggml_type);
        TPS_CHECK_AS(InputError, dt.has_value(), "{}: tensor {} has GGML type id {}, which tpserve does not know",
                     f.path, t.name, t.ggml_type);
        const auto bytes = matrix_bytes(*dt, elements / t.ne[0], t.ne[0]);
        TPS_CHECK_AS(InputError, bytes.has_value(),
                     "{}: tensor {} has rows of {} elements, not a multiple of {}'s {}-element blocks", f.path,
                     t.name, t.ne[0], dtype_name(*dt), dtype_layout(*dt).block);
        t.bytes = *bytes;
        f.tensors.push_back(std::move(t));
    }
    f.data_offset = (r.pos() + f.alignment - 1) / f.alignment * f.alignment;
    const uint64_t data_size = f.file_size >= f.data_offset ? f.file_size - f.data_offset : 0;
    for (const auto& t : f.tensors) {
        TPS_CHECK_AS(InputError, t.offset % f.alignment == 0,
                     "{}: tensor {} starts at data offset {}, not a multiple of the alignment {}", f.path,
                     t.name, t.offset, f.alignment);
        TPS_CHECK_AS(InputError, t.offset <= data_size && static_cast<uint64_t>(t.bytes) <= data_size - t.offset,
                     "{}: tensor {} ({} bytes at data offset {}) extends past the end of the file: "
                     "truncated download?",
                     f.path, t.name, t.bytes, t.offset);
    }
    return f;
}

}  // namespace tps
