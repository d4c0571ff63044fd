// Steps across ranks: rank 0's Driver, the workers' loop, and the part of a step every rank runs
// (driver.h). Greedy decoding never gathers logits: each rank of the last stage finds its
// vocabulary slice's best token, maximum and sum of exponentials, and one small all-gather gives
// every rank the winner and its exact log-probability.
#include "tpserve/engine/driver.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/memory_model.h"

#include <algorithm>
#include <cmath>
#include <exception>

namespace tps {
namespace {

// The winner over slices: the largest maximum, the lowest token id on a tie (as argmax over the
// whole row), log-probability max - logsumexp.
std::pair<int32_t, float> combine(std::span<const GreedyPick> parts) {
    for (const auto& c : parts) {
        // a NaN anywhere in the row reaches the sum of exponentials (and the maximum, when it is
        // first): loud, as the sampler is, rather than a token picked from garbage
        if (std::isnan(c.max) || std::isnan(c.sum_exp)) {
            throw Error("greedy: the model produced NaN logits (a broken checkpoint or an overflow)");
        }
    }
    float m = parts[0].max;
    int32_t token = parts[0].token;
    for (const auto& c : parts) {
        if (c.max > m || (c.max == m && c.token < token)) {
            m = c.max;
            token = c.token;
        }
    }
    double s = 0;
    for (const auto& c : parts) s += static_cast<double>(c.sum_exp) * std::exp(static_cast<double>(c.max - m));
    return {token, static_cast<float>(-std::log(s))};
}

}  // namespace

std::optional<StepOutput> run_stage(LlamaModel& model, const StageLinks* links, uint64_t id,
                                    const std::vector<SequenceStep>& step) {
    const StepResult r = model.forward(step);
    if (links && !links->map.last_stage()) return std::nullopt;
    Communicator* group = links ? (links->tp_host ? links->tp_host : links->tp) : nullptr;  // host buffers below
    const int tp = group ? group->size() : 1;
    const int64_t vocab = model.desc().vocab;

    StepOutput out;
    out.id = id;
    out.vocab = vocab;
    out.entries.resize(step.size());

    // greedy rows: candidates from every slice, one all-gather
    std::vector<GreedyPick> mine;
    for (size_t e = 0; e < step.size(); ++e) {
        if (step[e].output != StepOutputKind::greedy) continue;
        for (int64_t i = 0; i < r.rows[e]; ++i) mine.push_back(r.pick(static_cast<int64_t>(e), i));
    }
    if (!mine.empty()) {
        std::vector<GreedyPick> all(mine.size() * static_cast<size_t>(tp));
        if (group) {
            group->all_gather(mine.data(), all.data(), static_cast<int64_t>(mine.size() * sizeof(GreedyPick)),
                              "greedy candidates of each vocabulary slice");
        } else {
            all = mine;
        }
        std::vector<GreedyPick> parts(static_cast<size_t>(tp));
        size_t k = 0;
        for (size_t e = 0; e < step.size(); ++e) {
            if (step[e].output != StepOutputKind::greedy) continue;
            auto& entry = out.entries[e];
            entry.rows = r.rows[e];
            for (int64_t i = 0; i < r.rows[e]; ++i, ++k) {
                for (int p = 0; p < tp; ++p) parts[static_cast<size_t>(p)] = all[static_cast<size_t>(p) * mine.size() + k];
                const auto [token, logprob] = combine(parts);
                entry.tokens.push_back(token);
                entry.logprobs.push_back(logprob);
            }
        }
    }

    // sampled rows (one process: the model refuses them otherwise)
    for (size_t e = 0; e < step.size(); ++e) {
        if (step[e].output != StepOutputKind::sample) continue;
        auto& entry = out.entries[e];
        entry.rows = r.rows[e];
        entry.samples = {r.sample(static_cast<int64_t>(e))};
        entry.tokens = {entry.samples[0].token};
        entry.logprobs = {entry.samples[0].logprob};
    }

    // logits rows: gathered on the stage's first rank
    std::vector<float> slice;
    for (size_t e = 0; e < step.size(); ++e) {
        if (step[e].output != StepOutputKind::logits) continue;
        const float* first = r.row(static_cast<int64_t>(e), 0);
        slice.insert(slice.end(), first, first + r.rows[e] * r.vocab);
    }
    if (!slice.empty()) {
        const int64_t rows = static_cast<int64_t>(slice.size()) / r.vocab;
        if (group && group->rank() != 0) {
            group->send(slice.data(), static_cast<int64_t>(slice.size() * sizeof(float)), 0, "logits slice");
        } else {
            std::vector<float> full(static_cast<size_t>(rows * vocab));
            auto place = [&](const float* part, int64_t v0, int64_t v1) {
                for (int64_t i = 0; i < rows; ++i) std::copy_n(part + i * (v1 - v0), v1 - v0, full.data() + i * vocab + v0);
            };
            place(slice.data(), r.vocab_first, r.vocab_first + r.vocab);
            std::vector<float> part;
            for (int p = 1; p < tp; ++p) {
                const auto [v0, v1] = vocab_slice(vocab, tp, p);
                part.resize(static_cast<size_t>(rows * (v1 - v0)));
                group->recv(part.data(), static_cast<int64_t>(part.size() * sizeof(float)), p, "logits slice");
                place(part.data(), v0, v1);
            }
            int64_t at = 0;
            for (size_t e = 0; e < step.size(); ++e) {
                if (step[e].output != StepOutputKind::logits) continue;
                auto& entry = out.entries[e];
                entry.rows = r.rows[e];
                entry.logits.assign(full.begin() + at * vocab, full.begin() + (at + entry.rows) * vocab);
                at += entry.rows;
            }
        }
    }

    if (links == nullptr) return out;
    const int me = links->map.rank();
    if (me != links->map.sampler_rank()) return std::nullopt;
    if (me == ParallelMapping::driver_rank()) return out;
    links->world->post_message(encode_output(out), ParallelMapping::driver_rank(), "step output to rank 0");
    return std::nullopt;
}

Driver::Driver(LlamaModel& model, const StageLinks* links, ControlChannel* control)
    : model_(model), links_(links), control_(control) {
    TPS_CHECK((links == nullptr) == (control == nullptr), "driver: a split model needs both its links and the control channel");
    TPS_CHECK(links == nullptr || links->map.rank() == ParallelMapping::driver_rank(), "driver: only rank 0 drives steps");
}

Driver::~Driver() {
    // After a failure (or while an exception unwinds) the other ranks are not in a state to be
    // shut down in order: the edge reports the error and ends the job.
    if (failed_ || std::uncaught_exceptions() > 0) return;
    try {
        shutdown();
    } catch (...) {
        // a destructor cannot report; the launcher calls shutdown() itself and reports failures
    }
}

uint64_t Driver::submit(std::vector<SequenceStep> step) {
    TPS_CHECK(!shut_down_ && !failed_, "driver: submit after {}", failed_ ? "a failed step" : "shutdown");
    model_.validate(step);
    if (links_) {
        int64_t rows = 0;
        for (const auto& e : step) rows += e.output == StepOutputKind::logits ? e.rows() : 0;
        TPS_CHECK_AS(UsageError, rows <= max_logit_rows(),
                     "step: {} rows of logits ({} MB) are more than one step can return across ranks; ask for fewer",
                     rows, rows * model_.desc().vocab * 4 >> 20);
    }
    const uint64_t id = next_id_;
    try {
        if (control_) {
            StepDescriptor d;
            d.id = id;
            d.kv_ops = kv_ops_;
            d.entries = step;
            control_->post(encode_descriptor(d));
            kv_ops_.clear();
        }
        ++next_id_;
        pending_.push_back(id);
        auto out = run_stage(model_, links_, id, step);
        if (out) ready_.emplace(id, std::move(*out));
    } catch (...) {
        failed_ = links_ != nullptr;  // a single process is still consistent (forward rolls back)
        if (!failed_) pending_.erase(std::remove(pending_.begin(), pending_.end(), id), pending_.end());
        throw;
    }
    return id;
}

int64_t Driver::max_logit_rows() const noexcept {
    // f32 rows in one message under 2 GiB, with room for the message's framing
    return ((int64_t{1} << 31) - (int64_t{1} << 20)) / (4 * model_.desc().vocab) - 1;
}

StepOutput Driver::wait(uint64_t id) {
    const auto it = std::find(pending_.begin(), pending_.end(), id);
    TPS_CHECK_AS(UsageError, it != pending_.end(), "driver: step {} is not in flight", id);
    try {
        while (!ready_.contains(id)) {
            // outputs arrive in the order the steps were submitted
            const auto next = std::find_if(pending_.begin(), pending_.end(), [&](uint64_t p) { return !ready_.contains(p); });
            TPS_CHECK(links_ != nullptr && next != pending_.end(), "driver: step {} has no output coming", id);
            // while waiting, keep the other ranks' control deadline from running out
            StepOutput out = decode_output(links_->world->receive_message(
                links_->map.sampler_rank(), "step output from the last stage", [this] { control_->tick(); }));
            TPS_CHECK_AS(CommError, out.id == *next, "driver: the last stage sent the output of step {}, expected step {}",
                         out.id, *next);
            ready_.emplace(out.id, std::move(out));
        }
    } catch (...) {
        failed_ = true;
        throw;
    }
    StepOutput out = std::move(ready_.at(id));
    ready_.erase(id);
    pending_.erase(std::find(pending_.begin(), pending_.end(), id));
    return out;
}

void Driver::release(int64_t seq_id) {
    model_.release(seq_id);
    if (control_) kv_ops_.push_back({seq_id, -1, 0});
}

void Driver::share_prefix(int64_t seq_id, int64_t from_seq, int64_t tokens) {
    model_.share_prefix(seq_id, from_seq, tokens);
    if (control_) kv_ops_.push_back({seq_id, from_seq, tokens});
}

void Driver::tick() {
    if (control_ && !failed_) control_->tick();
}

void Driver::shutdown() {
    if (shut_down_ || failed_) return;
    while (!pending_.empty()) wait(pending_.front());
    if (control_) {
        StepDescriptor d;
        d.kind = StepDescriptor::Kind::shutdown;
        d.id = next_id_++;
        control_->post(encode_descriptor(d));
        control_->flush();
    }
    shut_down_ = true;
}

std::vector<std::vector<uint8_t>> Driver::gather_reports(std::vector<uint8_t> mine) {
    std::vector<std::vector<uint8_t>> out;
    out.push_back(std::move(mine));
    if (!control_) return out;
    TPS_CHECK(!shut_down_ && !failed_, "driver: reports asked after {}", failed_ ? "a failed step" : "shutdown");
    try {
        // the outputs of steps in flight come first from the last stage: take them (they stay the
        // caller's to wait for)
        for (const uint64_t id : pending_) {
            if (ready_.contains(id)) continue;
            StepOutput step = decode_output(links_->world->receive_message(
                links_->map.sampler_rank(), "step output from the last stage", [this] { control_->tick(); }));
            TPS_CHECK_AS(CommError, step.id == id, "driver: the last stage sent the output of step {}, expected step {}",
                         step.id, id);
            ready_.emplace(id, std::move(step));
        }
        StepDescriptor d;
        d.kind = StepDescriptor::Kind::report;
        d.id = next_id_++;
        d.kv_ops = kv_ops_;
        kv_ops_.clear();
        control_->post(encode_descriptor(d));
        for (int r = 1; r < links_->world->size(); ++r) {
            out.push_back(links_->world->receive_message(r, "a rank's report", [this] { control_->tick(); }));
        }
    } catch (...) {
        failed_ = true;
        throw;
    }
    return out;
}

void run_worker(LlamaModel& model, const StageLinks& links, ControlChannel& control,
                const std::function<std::vector<uint8_t>()>& report) {
    auto apply = [&](const std::vector<KvOp>& ops) {
        for (const KvOp& op : ops) {
            if (op.from < 0) model.release(op.seq);
            else model.share_prefix(op.seq, op.from, op.tokens);
        }
    };
    for (;;) {
        const StepDescriptor d = decode_descriptor(control.receive());
        if (d.kind == StepDescriptor::Kind::shutdown) break;
        if (d.kind == StepDescriptor::Kind::report) {
            apply(d.kv_ops);
            links.world->post_message(report ? report() : std::vector<uint8_t>{}, ParallelMapping::driver_rank(),
                                      "a report to rank 0");
            continue;
        }
        apply(d.kv_ops);
        run_stage(model, &links, d.id, d.entries);
    }
    links.world->flush_posted("step outputs to rank 0");
}

}  // namespace tps
