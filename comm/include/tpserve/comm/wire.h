// Little-endian byte encoding for what ranks tell each other outside the activations: the plan at
// start-up, step descriptors on the control channel, step results back to rank 0. A reader that
// runs past the end, or meets a count larger than what is left, throws tps::CommError naming the
// message: a corrupt message never becomes a wrong answer.
#pragma once

#include "tpserve/common/error.h"

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tps {

class ByteWriter {
public:
    template <class T>
    void put(T v) {
        static_assert(std::is_trivially_copyable_v<T>);
        append(&v, sizeof(T));
    }
    template <class T>
    void put_span(std::span<const T> v) {
        static_assert(std::is_trivially_copyable_v<T>);
        put<uint64_t>(v.size());
        append(v.data(), v.size_bytes());
    }
    void put_string(std::string_view s) { put_span(std::span<const char>(s.data(), s.size())); }
    std::vector<uint8_t> take();

private:
    void append(const void* data, size_t n);  // out of line: GCC 12 misreads the inlined growth
    std::vector<uint8_t> bytes_;
    size_t size_ = 0;
};

class ByteReader {
public:
    ByteReader(std::span<const uint8_t> bytes, std::string_view what) : bytes_(bytes), what_(what) {}

    template <class T>
    T get() {
        static_assert(std::is_trivially_copyable_v<T>);
        need(sizeof(T));
        T v;
        std::memcpy(&v, bytes_.data() + at_, sizeof(T));
        at_ += sizeof(T);
        return v;
    }
    template <class T>
    std::vector<T> get_vector() {
        const auto n = get<uint64_t>();
        if (n > (bytes_.size() - at_) / sizeof(T)) fail("a count larger than the message");
        std::vector<T> v(n);
        if (n) std::memcpy(v.data(), bytes_.data() + at_, n * sizeof(T));
        at_ += n * sizeof(T);
        return v;
    }
    std::string get_string() {
        const auto v = get_vector<char>();
        return {v.begin(), v.end()};
    }
    bool done() const noexcept { return at_ == bytes_.size(); }
    void expect_done() const {
        if (!done()) fail("bytes left over at the end");
    }

private:
    void need(size_t n) const {
        if (n > bytes_.size() - at_) fail("it ends early");
    }
    [[noreturn]] void fail(std::string_view why) const {
        throw CommError(std::string(what_) + ": malformed message (" + std::string(why) + ")");
    }
    std::span<const uint8_t> bytes_;
    std::string_view what_;
    size_t at_ = 0;
};

}  // namespace tps
