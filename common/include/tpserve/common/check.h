// TPS_CHECK(cond, "fmt {}", args...): stays on in release builds; throws tps::Error whose message
// tells the user what to do. TPS_CHECK_AS picks the exception type (tps::UsageError for flags,
// tps::InputError for files); errors about the user's input carry only their message, any other
// failed check is an internal invariant and also says where it failed.
#pragma once

#include "tpserve/common/error.h"

#include <fmt/format.h>

#include <type_traits>

namespace tps::detail {

template <class E>
[[noreturn]] void raise_check(std::string_view cond, const char* func, const char* file, int line,
                              const std::string& message) {
    if constexpr (std::is_base_of_v<UsageError, E> || std::is_base_of_v<InputError, E>) {
        throw E(message);
    } else {
        throw E(fmt::format("{} [check '{}' failed in {} at {}:{}{}]", message, cond, func, file,
                            line, context_suffix()));
    }
}

}  // namespace tps::detail

#define TPS_CHECK(cond, ...) TPS_CHECK_AS(::tps::Error, cond, __VA_ARGS__)

#define TPS_CHECK_AS(ErrorType, cond, ...)                                                        \
    do {                                                                                          \
        if (!(cond)) [[unlikely]]                                                                 \
            ::tps::detail::raise_check<ErrorType>(#cond, __func__, __FILE__, __LINE__,            \
                                                  ::fmt::format(__VA_ARGS__));                    \
    } while (0)
