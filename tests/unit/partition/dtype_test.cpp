// Byte sizes of every format. The GGML rows are gguf-py 0.19.0's GGML_QUANT_SIZES (block size,
// bytes per block), the reference the GGUF files are written with; q8_1 is left out (gguf-py
// says 40 bytes, ggml's block_q8_1 is 36, and no file stores it).
#include "tpserve/partition/dtype.h"

#include <gtest/gtest.h>

#include <tuple>

namespace tps {
namespace {

using Row = std::tuple<uint32_t, DType, int64_t, int64_t>;  // ggml id, type, block, bytes per block

class GgmlSizes : public ::testing::TestWithParam<Row> {};

TEST_P(GgmlSizes, MatchGgufPy) {
    const auto [id, type, block, bytes] = GetParam();
    ASSERT_EQ(dtype_from_ggml(id), type) << "ggml id " << id;
    EXPECT_EQ(dtype_layout(type).block, block);
    // one row of 4 blocks, 3 rows
    EXPECT_EQ(matrix_bytes(type, 3, 4 * block), 3 * 4 * bytes);
    EXPECT_EQ(parse_dtype(dtype_name(type)), type);
}

INSTANTIATE_TEST_SUITE_P(
    Gguf, GgmlSizes,
    ::testing::Values(Row{0, DType::f32, 1, 4}, Row{1, DType::f16, 1, 2}, Row{2, DType::q4_0, 32, 18},
                      Row{3, DType::q4_1, 32, 20}, Row{6, DType::q5_0, 32, 22}, Row{7, DType::q5_1, 32, 24},
                      Row{8, DType::q8_0, 32, 34}, Row{10, DType::q2_k, 256, 84},
                      Row{11, DType::q3_k, 256, 110}, Row{12, DType::q4_k, 256, 144}, Row{13, DType::q5_k, 256, 176},
                      Row{14, DType::q6_k, 256, 210}, Row{15, DType::q8_k, 256, 292}, Row{16, DType::iq2_xxs, 256, 66},
                      Row{17, DType::iq2_xs, 256, 74}, Row{18, DType::iq3_xxs, 256, 98}, Row{19, DType::iq1_s, 256, 50},
                      Row{20, DType::iq4_nl, 32, 18}, Row{21, DType::iq3_s, 256, 110}, Row{22, DType::iq2_s, 256, 82},
                      Row{23, DType::iq4_xs, 256, 136}, Row{24, DType::i8, 1, 1}, Row{25, DType::i16, 1, 2},
                      Row{26, DType::i32, 1, 4}, Row{27, DType::i64, 1, 8}, Row{28, DType::f64, 1, 8},
                      Row{29, DType::iq1_m, 256, 56}, Row{30, DType::bf16, 1, 2}, Row{34, DType::tq1_0, 256, 54},
                      Row{35, DType::tq2_0, 256, 66}, Row{39, DType::mxfp4, 32, 17},
                      Row{40, DType::nvfp4, 64, 36}, Row{41, DType::q1_0, 128, 18}),
    [](const ::testing::TestParamInfo<Row>& p) { return std::string(dtype_name(std::get<1>(p.param))); });

TEST(Dtype, RemovedAndUnknownGgmlIdsAreRejected) {
    for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u}) {
        EXPECT_FALSE(dtype_from_ggml(id).has_value()) << id;
    }
}

TEST(Dtype, PlannerFormatsIncludeScales) {
    // int8: one byte per weight + an f16 scale per output row
    EXPECT_EQ(matrix_bytes(DType::int8, 10, 64), 10 * 64 + 10 * 2);
    // fp8: one byte per weight + one f32 scale per tensor
    EXPECT_EQ(matrix_bytes(DType::fp8, 10, 64), 10 * 64 + 4);
    // int4, group 128: 64 bytes of nibbles + f16 scale + 4-bit zero = 66.5 bytes per group
    EXPECT_EQ(matrix_bytes(DType::int4, 2, 256), 2 * 2 * 133 / 2);
    EXPECT_EQ(matrix_bytes(DType::int4, 8, 128 * 3), 8 * 3 * 133 / 2);
    EXPECT_DOUBLE_EQ(bits_per_weight(DType::int4), 532.0 / 128.0);
}

TEST(Dtype, RowsThatDoNotSplitIntoBlocksAreRejected) {
    EXPECT_FALSE(matrix_bytes(DType::q4_k, 4, 255).has_value());
    EXPECT_FALSE(matrix_bytes(DType::int4, 4, 100).has_value());
    EXPECT_FALSE(matrix_bytes(DType::q8_0, 1, 33).has_value());
    // a vector is stored as one row of its elements
    EXPECT_EQ(matrix_bytes(DType::q8_0, 64, 1), 2 * 34);
    EXPECT_EQ(matrix_bytes(DType::f32, 576, 1), 576 * 4);
}

TEST(Dtype, ParsesCommonSpellings) {
    EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
    EXPECT_EQ(parse_dtype("FP16"), DType::f16);
    EXPECT_EQ(parse_dtype("float32"), DType::f32);
    EXPECT_EQ(parse_dtype("Q4_K"), DType::q4_k);
    EXPECT_FALSE(parse_dtype("int3").has_value());
    EXPECT_FALSE(parse_dtype("").has_value());
    EXPECT_EQ(kv_element_bytes(DType::fp8), 1);
    EXPECT_FALSE(kv_element_bytes(DType::q4_0).has_value());
}

}  // namespace
}  // namespace tps
