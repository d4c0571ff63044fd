// The wire forms of step descriptors (rank 0 to every rank) and step outputs (the last stage to
// rank 0). Versioned by a magic number; every count is checked against the message's length.
#include "tpserve/comm/wire.h"
#include "tpserve/common/check.h"
#include "tpserve/engine/driver.h"

namespace tps {
namespace {

constexpr uint32_t kDescriptorMagic = 0x32505354;  // "TSP2"
constexpr uint32_t kOutputMagic = 0x314f5354;      // "TSO1"

}  // namespace

std::vector<uint8_t> encode_descriptor(const StepDescriptor& d) {
    ByteWriter w;
    w.put(kDescriptorMagic);
    w.put(static_cast<uint8_t>(d.kind));
    w.put(d.id);
    w.put<uint64_t>(d.kv_ops.size());
    for (const auto& op : d.kv_ops) {
        w.put(op.seq);
        w.put(op.from);
        w.put(op.tokens);
    }
    w.put<uint64_t>(d.entries.size());
    for (const auto& e : d.entries) {
        w.put(e.seq_id);
        w.put(e.start_pos);
        w.put(static_cast<uint8_t>(e.output));
        w.put(static_cast<uint8_t>(e.all_logits));
        w.put_span(std::span<const int32_t>(e.tokens));
    }
    return w.take();
}

StepDescriptor decode_descriptor(std::span<const uint8_t> bytes) {
    ByteReader r(bytes, "step descriptor");
    TPS_CHECK_AS(CommError, r.get<uint32_t>() == kDescriptorMagic,
                 "step descriptor: wrong magic number (ranks of different tpserve versions?)");
    StepDescriptor d;
    const auto kind = r.get<uint8_t>();
    TPS_CHECK_AS(CommError, kind >= 1 && kind <= 3, "step descriptor: unknown kind {}", kind);
    d.kind = static_cast<StepDescriptor::Kind>(kind);
    d.id = r.get<uint64_t>();
    const auto ops = r.get<uint64_t>();
    TPS_CHECK_AS(CommError, ops <= bytes.size(), "step descriptor: {} KV changes cannot fit in {} bytes", ops, bytes.size());
    d.kv_ops.resize(ops);
    for (auto& op : d.kv_ops) {
        op.seq = r.get<int64_t>();
        op.from = r.get<int64_t>();
        op.tokens = r.get<int64_t>();
    }
    const auto n = r.get<uint64_t>();
    TPS_CHECK_AS(CommError, n <= bytes.size(), "step descriptor: {} entries cannot fit in {} bytes", n, bytes.size());
    d.entries.resize(n);
    for (auto& e : d.entries) {
        e.seq_id = r.get<int64_t>();
        e.start_pos = r.get<int64_t>();
        const auto out = r.get<uint8_t>();
        TPS_CHECK_AS(CommError, out <= 2, "step descriptor: unknown output kind {}", out);
        e.output = static_cast<StepOutputKind>(out);
        e.all_logits = r.get<uint8_t>() != 0;
        e.tokens = r.get_vector<int32_t>();
    }
    r.expect_done();
    return d;
}

std::vector<uint8_t> encode_output(const StepOutput& out) {
    ByteWriter w;
    w.put(kOutputMagic);
    w.put(out.id);
    w.put(out.vocab);
    w.put<uint64_t>(out.entries.size());
    for (const auto& e : out.entries) {
        w.put(e.rows);
        w.put_span(std::span<const int32_t>(e.tokens));
        w.put_span(std::span<const float>(e.logprobs));
        w.put_span(std::span<const float>(e.logits));
    }
    return w.take();
}

StepOutput decode_output(std::span<const uint8_t> bytes) {
    ByteReader r(bytes, "step output");
    TPS_CHECK_AS(CommError, r.get<uint32_t>() == kOutputMagic, "step output: wrong magic number");
    StepOutput out;
    out.id = r.get<uint64_t>();
    out.vocab = r.get<int64_t>();
    const auto n = r.get<uint64_t>();
    TPS_CHECK_AS(CommError, n <= bytes.size(), "step output: {} entries cannot fit in {} bytes", n, bytes.size());
    out.entries.resize(n);
    for (auto& e : out.entries) {
        e.rows = r.get<int64_t>();
        e.tokens = r.get_vector<int32_t>();
        e.logprobs = r.get_vector<float>();
        e.logits = r.get_vector<float>();
    }
    r.expect_done();
    return out;
}

}  // namespace tps
