// The error context (rank, device) is per process: one process serves one rank on one device, and
// every thread of it (engine loop, HTTP threads) reports errors under the same rank and device.
#include "tpserve/common/error.h"

#include <fmt/format.h>

#include <atomic>

namespace tps {
namespace {
std::atomic<int> g_rank{-1};
std::atomic<int> g_device{-1};
}  // namespace

void set_error_context(ErrorContext ctx) noexcept {
    g_rank.store(ctx.rank, std::memory_order_relaxed);
    g_device.store(ctx.device, std::memory_order_relaxed);
}

ErrorContext error_context() noexcept {
    return {g_rank.load(std::memory_order_relaxed), g_device.load(std::memory_order_relaxed)};
}

namespace detail {
std::string context_suffix() {
    const ErrorContext ctx = error_context();
    if (ctx.rank < 0 && ctx.device < 0) return {};
    if (ctx.device < 0) return fmt::format(" (rank {})", ctx.rank);
    if (ctx.rank < 0) return fmt::format(" (device {})", ctx.device);
    return fmt::format(" (rank {}, device {})", ctx.rank, ctx.device);
}
void raise_status(ErrorKind kind, std::string_view api, std::string_view stmt, std::string_view status,
                  const char* func, const char* file, int line) {
    const std::string msg = fmt::format("{} error '{}' from {} in {} at {}:{}{}", api, status, stmt, func,
                                        file, line, context_suffix());
    switch (kind) {
        case ErrorKind::usage: throw UsageError(msg);
        case ErrorKind::input: throw InputError(msg);
        case ErrorKind::device: throw DeviceError(msg);
        case ErrorKind::comm: throw CommError(msg);
        case ErrorKind::internal: throw Error(msg);
    }
    throw Error(msg);
}

}  // namespace detail
}  // namespace tps
