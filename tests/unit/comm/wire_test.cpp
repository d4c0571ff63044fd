// The wire forms ranks exchange: step descriptors and step outputs survive a round trip exactly,
// and every truncated or corrupted message is refused with CommError, never read as something else.
#include "tpserve/comm/wire.h"
#include "tpserve/engine/driver.h"

#include <gtest/gtest.h>

namespace tps {
namespace {

StepDescriptor sample_descriptor() {
    StepDescriptor d;
    d.id = 42;
    d.kv_ops = {{7, -1, 0}, {11, 9, 32}, {9, -1, 0}};  // forget 7, start 11 on 32 tokens of 9, forget 9
    SequenceStep a{3, {1, 2, 3}, 0, false};
    a.output = StepOutputKind::none;
    SequenceStep b{4, {5}, 17, true};
    b.output = StepOutputKind::greedy;
    SequenceStep c{5, {6, 7}, 2, false};
    c.output = StepOutputKind::logits;
    d.entries = {a, b, c};
    return d;
}

TEST(Wire, DescriptorRoundTrip) {
    const StepDescriptor d = sample_descriptor();
    const StepDescriptor back = decode_descriptor(encode_descriptor(d));
    EXPECT_EQ(back.kind, d.kind);
    EXPECT_EQ(back.id, 42u);
    EXPECT_EQ(back.kv_ops, d.kv_ops);
    ASSERT_EQ(back.entries.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(back.entries[i].seq_id, d.entries[i].seq_id);
        EXPECT_EQ(back.entries[i].tokens, d.entries[i].tokens);
        EXPECT_EQ(back.entries[i].start_pos, d.entries[i].start_pos);
        EXPECT_EQ(back.entries[i].all_logits, d.entries[i].all_logits);
        EXPECT_EQ(back.entries[i].output, d.entries[i].output);
    }
    StepDescriptor stop;
    stop.kind = StepDescriptor::Kind::shutdown;
    EXPECT_EQ(decode_descriptor(encode_descriptor(stop)).kind, StepDescriptor::Kind::shutdown);
}

TEST(Wire, OutputRoundTrip) {
    StepOutput o;
    o.id = 5;
    o.vocab = 3;
    o.entries.resize(2);
    o.entries[0].rows = 1;
    o.entries[0].tokens = {2};
    o.entries[0].logprobs = {-0.25f};
    o.entries[1].rows = 2;
    o.entries[1].logits = {1, 2, 3, 4, 5, 6};
    const StepOutput back = decode_output(encode_output(o));
    EXPECT_EQ(back.id, 5u);
    EXPECT_EQ(back.vocab, 3);
    ASSERT_EQ(back.entries.size(), 2u);
    EXPECT_EQ(back.entries[0].tokens, o.entries[0].tokens);
    EXPECT_EQ(back.entries[0].logprobs, o.entries[0].logprobs);
    EXPECT_EQ(back.entries[1].logits, o.entries[1].logits);
    EXPECT_EQ(back.entries[1].rows, 2);
}

TEST(Wire, EveryTruncationIsRefused) {
    const auto bytes = encode_descriptor(sample_descriptor());
    for (size_t n = 0; n < bytes.size(); ++n) {
        const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
        EXPECT_THROW(decode_descriptor(cut), CommError) << n << " bytes";
    }
    auto longer = bytes;
    longer.push_back(0);
    EXPECT_THROW(decode_descriptor(longer), CommError);
}

TEST(Wire, CorruptFieldsAreRefused) {
    auto bytes = encode_descriptor(sample_descriptor());
    auto bad_magic = bytes;
    bad_magic[0] ^= 1;
    EXPECT_THROW(decode_descriptor(bad_magic), CommError);
    auto bad_kind = bytes;
    bad_kind[4] = 9;
    EXPECT_THROW(decode_descriptor(bad_kind), CommError);
    // a count far larger than the message
    ByteWriter w;
    w.put<uint64_t>(uint64_t{1} << 60);
    const auto huge = w.take();
    ByteReader r(huge, "test message");
    EXPECT_THROW(r.get_vector<int32_t>(), CommError);
    // an output message is not a descriptor
    StepOutput o;
    EXPECT_THROW(decode_descriptor(encode_output(o)), CommError);
}

}  // namespace
}  // namespace tps
