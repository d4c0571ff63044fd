#include "tpserve/common/strings.h"

#include <gtest/gtest.h>

namespace tps {
namespace {

TEST(Strings, NumbersParseWholeOrNotAtAll) {
    EXPECT_EQ(parse_int("42"), 42);
    EXPECT_EQ(parse_int(" +7 "), 7);
    EXPECT_EQ(parse_int("-3"), -3);
    EXPECT_FALSE(parse_int("12abc").has_value());
    EXPECT_FALSE(parse_int("").has_value());
    EXPECT_FALSE(parse_int("99999999999999999999").has_value());
    EXPECT_EQ(parse_double("1.5"), 1.5);
    EXPECT_FALSE(parse_double("1.5x").has_value());
    EXPECT_FALSE(parse_double("nan").has_value());
    EXPECT_FALSE(parse_double("inf").has_value());
}

TEST(Strings, SplitTrimLowerAndGib) {
    EXPECT_EQ(split("a,,b", ','), (std::vector<std::string>{"a", "", "b"}));
    EXPECT_EQ(split("", ','), (std::vector<std::string>{""}));
    EXPECT_EQ(trim("  x y \t"), "x y");
    EXPECT_EQ(to_lower("RTX5090"), "rtx5090");
    EXPECT_EQ(gib(24 * kGiB), "24.00");
    EXPECT_EQ(gib(kGiB / 2, 1), "0.5");
}

}  // namespace
}  // namespace tps
