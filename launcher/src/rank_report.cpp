#include "rank_report.h"

#include "memory_report.h"

#include "tpserve/common/check.h"

#include <nlohmann/json.hpp>

namespace tps::cli {


std::vector<uint8_t> encode_report(const RankReport& r) {
    const nlohmann::json j = {{"rank", r.rank},
                              {"stage", r.stage},
                              {"step_seconds", r.step_seconds},
                              {"collective_seconds", r.collective_seconds},
                              {"weights", r.actual.weights},
                              {"kv_cache", r.actual.kv_cache},
                              {"activations", r.actual.activations},
                              {"runtime", r.actual.runtime}};
    const std::string text = j.dump();
    return {text.begin(), text.end()};
}

RankReport decode_report(const std::vector<uint8_t>& bytes) {
    const auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    TPS_CHECK_AS(CommError, j.is_object() && j.contains("rank"), "a rank's report is not what rank 0 expects");
    RankReport r;
    r.rank = j.at("rank").get<int>();
    r.stage = j.at("stage").get<int>();
    r.step_seconds = j.at("step_seconds").get<double>();
    r.collective_seconds = j.at("collective_seconds").get<double>();
    r.actual.weights = j.at("weights").get<int64_t>();
    r.actual.kv_cache = j.at("kv_cache").get<int64_t>();
    r.actual.activations = j.at("activations").get<int64_t>();
    r.actual.runtime = j.at("runtime").get<int64_t>();
    return r;
}

RankReport own_report(const LlamaModel& model, int rank, int stage, std::span<const Communicator* const> comms) {
    RankReport r;
    r.rank = rank;
    r.stage = stage;
    r.step_seconds = model.forward_seconds();
    for (const auto* c : comms) r.collective_seconds += c ? c->stats().total_seconds() : 0;
    r.actual = actual_memory(model);
    return r;
}

RankReport own_report(const Shard& shard) {
    const auto comms = shard.stage_comms();
    const std::vector<const Communicator*> view(comms.begin(), comms.end());
    return own_report(*shard.model, shard.map->rank(), shard.map->stage(), view);
}

}  // namespace tps::cli
