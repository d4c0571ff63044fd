// Small string helpers shared by the libraries: strict number parsing (the whole text or nothing,
// so "12abc" is an error, not 12), splitting, and byte quantities in the binary units GPUs report.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

inline constexpr int64_t kKiB = int64_t{1} << 10;
inline constexpr int64_t kMiB = int64_t{1} << 20;
inline constexpr int64_t kGiB = int64_t{1} << 30;

// Whole-string parses; nullopt on any trailing text, overflow, or (for doubles) NaN / infinity.
std::optional<int64_t> parse_int(std::string_view text);
std::optional<double> parse_double(std::string_view text);

std::vector<std::string> split(std::string_view text, char sep);
std::string_view trim(std::string_view text);
std::string to_lower(std::string_view text);

// 16.93 GiB as "16.93"; bytes / 2^30 with two decimals.
std::string gib(int64_t bytes, int decimals = 2);

}  // namespace tps
