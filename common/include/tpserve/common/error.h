// The one error policy of tpserve: libraries throw typed exceptions derived from tps::Error; only
// the edges (main, the HTTP handler, the per-rank loop) turn them into messages and exit codes.
// Every API status check (CUDA, cuBLAS, NCCL, MPI) is made by one generator macro,
// TPS_CHECK_STATUS_, so each records the statement, function, file, line, and the rank and
// device of the process that failed. This header has no formatting library in it so that CUDA
// sources can include it; TPS_CHECK (formatted messages) is in check.h.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace tps {

// Base of every error tpserve throws on purpose. what() is a complete, user-facing sentence.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A command-line flag or its value is wrong; the launcher exits with code 2.
class UsageError : public Error {
public:
    using Error::Error;
};

// A file or its content is wrong (missing config field, corrupt GGUF, bad plan JSON).
class InputError : public Error {
public:
    using Error::Error;
};

// A CUDA, cuBLAS or NCCL call failed.
class DeviceError : public Error {
public:
    using Error::Error;
};

// An MPI call failed, a peer died, or a collective ran past its deadline.
class CommError : public Error {
public:
    using Error::Error;
};

// Which rank and device this process works for; set once per rank (comm/), read by error messages.
struct ErrorContext {
    int rank = -1;    // -1: not running under MPI (yet)
    int device = -1;  // -1: no device selected
};
void set_error_context(ErrorContext ctx) noexcept;
ErrorContext error_context() noexcept;

enum class ErrorKind { internal, usage, input, device, comm };

namespace detail {

// " (rank 1, device 1)" or "" when neither is known.
std::string context_suffix();

// Throws the exception of `kind`: "<api> error '<status>' from <stmt> in <func> at <file>:<line>
// (rank r, device d)".
[[noreturn]] void raise_status(ErrorKind kind, std::string_view api, std::string_view stmt,
                               std::string_view status, const char* func, const char* file, int line);

}  // namespace detail
}  // namespace tps

// The generator: evaluates `stmt` once into tps_status_, tests `ok_expr` (which may name
// tps_status_), and on failure throws the exception of `kind` naming the API, the status text,
// the statement, the function, file, line, rank and device.
#define TPS_CHECK_STATUS_(kind, api, stmt, ok_expr, describe)                                     \
    do {                                                                                          \
        const auto tps_status_ = (stmt);                                                          \
        if (!(ok_expr)) [[unlikely]]                                                              \
            ::tps::detail::raise_status(kind, api, #stmt, describe(tps_status_), __func__,        \
                                        __FILE__, __LINE__);                                      \
    } while (0)

// The API-specific checks are defined beside the code that includes each API's header:
//   TPS_CHECK_CUDA (engine/src/cuda/cuda_check.h), TPS_CHECK_CUBLAS, TPS_CHECK_NCCL and
//   TPS_CHECK_MPI (comm/), each one line over TPS_CHECK_STATUS_.
