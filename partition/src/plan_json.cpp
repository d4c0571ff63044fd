#include "tpserve/partition/plan_json.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/model.h"

#include <fmt/format.h>

#include <fstream>
#include <set>

namespace tps {
namespace {

using nlohmann::json;

json band_json(const Band& b) { return {{"min_bytes", b.min_bytes}, {"max_bytes", b.max_bytes}}; }

json stage_time_json(const std::vector<StageTime>& v) {
    json a = json::array();
    for (const auto& t : v) {
        a.push_back({{"memory_s", t.memory_s},
                     {"compute_s", t.compute_s},
                     {"busy_s", t.busy_s},
                     {"allreduce_s", t.allreduce_s},
                     {"allreduces", t.allreduces},
                     {"handover_s", t.handover_s},
                     {"total_s", t.total_s}});
    }
    return a;
}

json model_json(const ModelSummary& m) {
    return {{"name", m.name},
            {"source", m.source},
            {"architecture", m.architecture},
            {"fingerprint", m.fingerprint},
            {"layers", m.layers},
            {"hidden", m.hidden},
            {"intermediate", m.intermediate},
            {"heads", m.heads},
            {"kv_heads", m.kv_heads},
            {"head_dim", m.head_dim},
            {"vocab", m.vocab},
            {"experts", m.experts},
            {"experts_active", m.experts_active},
            {"tied_embeddings", m.tied_embeddings},
            {"weight_format", m.weight_format},
            {"weight_bytes", m.weight_bytes},
            {"parameters", m.parameters}};
}

json devices_json(const Plan& p) {
    json a = json::array();
    for (size_t i = 0; i < p.devices.size(); ++i) {
        const DeviceProfile& d = p.devices[i];
        a.push_back({{"index", i},
                     {"name", d.name},
                     {"kind", d.kind == DeviceKind::gpu ? "gpu" : "cpu"},
                     {"memory_bytes", d.memory_bytes},
                     {"bandwidth_gbs", d.bandwidth / 1e9},
                     {"tflops", d.flops / 1e12},
                     {"sm", d.sm},
                     {"link", std::string(link_kind_name(d.link))},
                     {"p2p", d.p2p},
                     {"measured", d.measured},
                     {"source", d.source},
                     {"band", band_json(p.bands.at(i))}});
    }
    return a;
}

json link_json(const LinkProfile& l) { return json::parse(link_profile_json(l)); }

json serving_json(const ServingShape& s) {
    return {{"max_batch", s.max_batch},
            {"max_context", s.max_context},
            {"kv_dtype", std::string(dtype_name(s.kv_dtype))},
            {"prefill_chunk", s.prefill_chunk},
            {"prompt_tokens", s.prompt_tokens},
            {"objective", std::string(objective_name(s.objective))}};
}

json alternatives_json(const std::vector<Alternative>& alts) {
    json a = json::array();
    for (const auto& x : alts) {
        json e = {{"shape", x.shape}, {"feasible", x.feasible}, {"reason", x.reason}};
        if (x.feasible) {
            e["decode_tokens_per_s"] = {{"batch_1", x.decode_tps_batch1}, {"max_batch", x.decode_tps_max_batch}};
            e["prefill_seconds"] = x.prefill_s;
        }
        a.push_back(e);
    }
    return a;
}

// --- reading ---------------------------------------------------------------------------------

constexpr int kMaxIndex = 1 << 20;

struct In {
    const json& j;
    const std::string& origin;
    std::string path;

    const json& at(const char* key) const {
        TPS_CHECK_AS(InputError, j.is_object() && j.contains(key), "{}: missing \"{}\"{}", origin, path + key,
                     "");
        return j[key];
    }
    In sub(const char* key) const { return In{at(key), origin, path + key + "."}; }
    int64_t integer(const char* key, int64_t min = 0, int64_t max = INT64_MAX) const {
        const json& v = at(key);
        TPS_CHECK_AS(InputError, v.is_number_integer() && v.get<int64_t>() >= min && v.get<int64_t>() <= max,
                     "{}: \"{}\" must be an integer in [{}, {}], got {}", origin, path + key, min, max, v.dump());
        return v.get<int64_t>();
    }
    // byte counts: below a pebibyte, so sums of them cannot overflow
    int64_t bytes(const char* key) const { return integer(key, 0, int64_t{1} << 50); }
    // ranks, stages, devices and tp degrees: small integers
    int index(const char* key, int min = 0) const { return static_cast<int>(integer(key, min, kMaxIndex)); }
    double number(const char* key) const {
        const json& v = at(key);
        TPS_CHECK_AS(InputError, v.is_number(), "{}: \"{}\" must be a number, got {}", origin, path + key, v.dump());
        return v.get<double>();
    }
    std::string string(const char* key) const {
        const json& v = at(key);
        TPS_CHECK_AS(InputError, v.is_string(), "{}: \"{}\" must be a string, got {}", origin, path + key, v.dump());
        return v.get<std::string>();
    }
    bool boolean(const char* key) const {
        const json& v = at(key);
        TPS_CHECK_AS(InputError, v.is_boolean(), "{}: \"{}\" must be true or false", origin, path + key);
        return v.get<bool>();
    }
    const json& array(const char* key) const {
        const json& v = at(key);
        TPS_CHECK_AS(InputError, v.is_array(), "{}: \"{}\" must be an array", origin, path + key);
        return v;
    }
    std::pair<int64_t, int64_t> range(const char* key) const {
        const json& v = array(key);
        TPS_CHECK_AS(InputError, v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer(),
                     "{}: \"{}\" must be [first, last]", origin, path + key);
        return {v[0].get<int64_t>(), v[1].get<int64_t>()};
    }
};

Band read_band(const In& in) { return Band{in.bytes("min_bytes"), in.bytes("max_bytes")}; }

std::vector<int> int_list(const json& a, const std::string& origin, const std::string& what) {
    std::vector<int> v;
    for (const auto& x : a) {
        TPS_CHECK_AS(InputError, x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < (1 << 20),
                     "{}: {} holds {}, not a rank or device index", origin, what, x.dump());
        v.push_back(x.get<int>());
    }
    return v;
}

// What a plan and an infeasible result both say: the request.
json request_json(const Plan& p, bool feasible) {
    json j;
    j["schema"] = kPlanSchema;
    j["feasible"] = feasible;
    j["model"] = model_json(p.model);
    j["serving"] = serving_json(p.serving);
    j["devices"] = devices_json(p);
    j["link"] = link_json(p.link);
    return j;
}

}  // namespace

json plan_to_json(const Plan& p) {
    json j = request_json(p, true);
    j["world_size"] = p.world_size;
    j["shape"] = p.shape;
    j["stages"] = json::array();
    json per_stage_tokens = json::array();
    for (const auto& s : p.stages) {
        j["stages"].push_back({{"index", s.index},
                               {"layers", {s.first_layer, s.last_layer}},
                               {"tp", s.tp},
                               {"ranks", s.ranks},
                               {"devices", s.devices},
                               {"kv_heads_per_rank", s.kv_heads_per_rank},
                               {"kv_replicated", s.kv_replicated},
                               {"kv_tokens", s.kv_tokens}});
        per_stage_tokens.push_back(s.kv_tokens);
    }
    j["per_rank"] = json::array();
    for (const auto& r : p.per_rank) {
        j["per_rank"].push_back({{"rank", r.rank},
                                 {"stage", r.stage},
                                 {"tp_rank", r.tp_rank},
                                 {"device", r.device},
                                 {"device_name", r.device_name},
                                 {"layers", {r.first_layer, r.last_layer}},
                                 {"vocab", {r.vocab_first, r.vocab_last}},
                                 {"bytes",
                                  {{"weights", r.bytes.weights},
                                   {"kv_cache", r.bytes.kv_cache},
                                   {"activations", r.bytes.activations},
                                   {"runtime", r.bytes.runtime},
                                   {"total", r.bytes.total()}}},
                                 {"band", band_json(r.band)}});
    }
    j["kv_cache"] = {{"tokens", p.kv_tokens},
                     {"block_tokens", kKvBlockTokens},
                     {"dtype", std::string(dtype_name(p.serving.kv_dtype))},
                     {"tokens_per_stage", per_stage_tokens}};
    const Estimate& e = p.estimate;
    j["estimate"] = {{"decode_tokens_per_s", {{"batch_1", e.decode_tps_batch1}, {"max_batch", e.decode_tps_max_batch}}},
                     {"max_batch", e.max_batch},
                     {"micro_batches", e.micro_batches},
                     {"prefill_seconds", e.prefill_s},
                     {"prompt_tokens", e.prompt_tokens},
                     {"context_tokens", e.context_tokens},
                     {"efficiency", {{"bandwidth", e.bandwidth_efficiency}, {"compute", e.compute_efficiency}}},
                     {"terms",
                      {{"batch_1", stage_time_json(e.batch1)},
                       {"max_batch", stage_time_json(e.max_batch_stages)},
                       {"prefill", stage_time_json(e.prefill)}}}};
    j["rationale"] = p.rationale;
    j["alternatives"] = alternatives_json(p.alternatives);
    j["notes"] = p.notes;
    return j;
}

json infeasible_to_json(const PlanResult& r) {
    const Plan& p = r.plan;
    json j = request_json(p, false);
    j["why"] = r.why_infeasible;
    j["suggestions"] = r.suggestions;
    j["alternatives"] = alternatives_json(r.candidates);
    j["notes"] = p.notes;
    return j;
}

Plan plan_from_json(const json& j, const std::string& origin) {
    TPS_CHECK_AS(InputError, j.is_object(), "{}: a plan must be a JSON object", origin);
    const In top{j, origin, ""};
    TPS_CHECK_AS(InputError, top.string("schema") == kPlanSchema, "{}: schema \"{}\" is not {}", origin,
                 top.string("schema"), kPlanSchema);
    TPS_CHECK_AS(InputError, top.boolean("feasible"),
                 "{}: this file records a request that nothing fits, not a plan", origin);
    Plan p;
    const In m = top.sub("model");
    p.model.name = m.string("name");
    p.model.source = m.string("source");
    p.model.architecture = m.string("architecture");
    p.model.fingerprint = m.string("fingerprint");
    p.model.layers = m.integer("layers", 1);
    p.model.hidden = m.integer("hidden", 1);
    p.model.intermediate = m.integer("intermediate", 1);
    p.model.heads = m.integer("heads", 1);
    p.model.kv_heads = m.integer("kv_heads", 1);
    p.model.head_dim = m.integer("head_dim", 1);
    p.model.vocab = m.integer("vocab", 1);
    p.model.experts = m.integer("experts");
    p.model.experts_active = m.integer("experts_active");
    p.model.tied_embeddings = m.boolean("tied_embeddings");
    p.model.weight_format = m.string("weight_format");
    p.model.weight_bytes = m.integer("weight_bytes");
    p.model.parameters = m.integer("parameters");

    const In sv = top.sub("serving");
    p.serving.max_batch = sv.integer("max_batch", 1);
    p.serving.max_context = sv.integer("max_context", 1);
    const auto kv = parse_dtype(sv.string("kv_dtype"));
    TPS_CHECK_AS(InputError, kv && kv_element_bytes(*kv), "{}: serving.kv_dtype \"{}\" is not a KV type", origin,
                 sv.string("kv_dtype"));
    p.serving.kv_dtype = *kv;
    p.serving.prefill_chunk = sv.integer("prefill_chunk", 1);
    p.serving.prompt_tokens = sv.integer("prompt_tokens", 1);
    const std::string obj = sv.string("objective");
    TPS_CHECK_AS(InputError, obj == "latency" || obj == "throughput",
                 "{}: serving.objective \"{}\" is not latency or throughput", origin, obj);
    p.serving.objective = obj == "latency" ? Objective::latency : Objective::throughput;

    for (const auto& dj : top.array("devices")) {
        const In d{dj, origin, "devices[]."};
        DeviceProfile dev;
        dev.name = d.string("name");
        const std::string kind = d.string("kind");
        TPS_CHECK_AS(InputError, kind == "gpu" || kind == "cpu", "{}: device kind \"{}\" is not gpu or cpu", origin, kind);
        dev.kind = kind == "gpu" ? DeviceKind::gpu : DeviceKind::cpu;
        dev.memory_bytes = std::max<int64_t>(1, d.bytes("memory_bytes"));
        dev.bandwidth = d.number("bandwidth_gbs") * 1e9;
        dev.flops = d.number("tflops") * 1e12;
        dev.sm = d.index("sm");
        const std::string link = d.string("link");
        const auto lk = parse_link_kind(link);
        TPS_CHECK_AS(InputError, lk || link == "host-memory", "{}: device link \"{}\" is unknown", origin, link);
        dev.link = lk.value_or(LinkKind::host_memory);
        dev.p2p = d.boolean("p2p");
        dev.measured = d.boolean("measured");
        dev.source = d.string("source");
        p.devices.push_back(dev);
        p.bands.push_back(read_band(d.sub("band")));
    }
    {
        const In l = top.sub("link");
        const std::string kind = l.string("kind");
        const auto lk = parse_link_kind(kind);
        TPS_CHECK_AS(InputError, lk || kind == "host-memory", "{}: link.kind \"{}\" is unknown", origin, kind);
        p.link.kind = lk.value_or(LinkKind::host_memory);
        p.link.p2p = l.boolean("p2p");
        p.link.allreduce_alpha = l.sub("allreduce").number("alpha_us") * 1e-6;
        p.link.allreduce_beta = l.sub("allreduce").number("bus_bandwidth_gbs") * 1e9;
        p.link.send_alpha = l.sub("send").number("alpha_us") * 1e-6;
        p.link.send_beta = l.sub("send").number("bandwidth_gbs") * 1e9;
        p.link.source = l.string("source");
    }
    p.world_size = top.index("world_size", 1);
    p.shape = top.string("shape");
    for (const auto& sj : top.array("stages")) {
        const In s{sj, origin, "stages[]."};
        StagePlan st;
        st.index = s.index("index");
        std::tie(st.first_layer, st.last_layer) = s.range("layers");
        st.tp = s.index("tp", 1);
        st.ranks = int_list(s.array("ranks"), origin, "stages[].ranks");
        st.devices = int_list(s.array("devices"), origin, "stages[].devices");
        st.kv_heads_per_rank = s.integer("kv_heads_per_rank", 1);
        st.kv_replicated = s.boolean("kv_replicated");
        st.kv_tokens = s.integer("kv_tokens");
        p.stages.push_back(st);
    }
    for (const auto& rj : top.array("per_rank")) {
        const In r{rj, origin, "per_rank[]."};
        RankPlan rp;
        rp.rank = r.index("rank");
        rp.stage = r.index("stage");
        rp.tp_rank = r.index("tp_rank");
        rp.device = r.index("device");
        rp.device_name = r.string("device_name");
        std::tie(rp.first_layer, rp.last_layer) = r.range("layers");
        std::tie(rp.vocab_first, rp.vocab_last) = r.range("vocab");
        const In b = r.sub("bytes");
        rp.bytes.weights = b.bytes("weights");
        rp.bytes.kv_cache = b.bytes("kv_cache");
        rp.bytes.activations = b.bytes("activations");
        rp.bytes.runtime = b.bytes("runtime");
        rp.band = read_band(r.sub("band"));
        p.per_rank.push_back(rp);
    }
    p.kv_tokens = top.sub("kv_cache").integer("tokens");
    if (j.contains("rationale") && j["rationale"].is_string()) p.rationale = j["rationale"].get<std::string>();
    for (const auto& n : top.array("notes")) {
        if (n.is_string()) p.notes.push_back(n.get<std::string>());
    }
    // The estimate and alternatives are informative; only their headline figures are read back.
    const In e = top.sub("estimate");
    p.estimate.decode_tps_batch1 = e.sub("decode_tokens_per_s").number("batch_1");
    p.estimate.decode_tps_max_batch = e.sub("decode_tokens_per_s").number("max_batch");
    p.estimate.prefill_s = e.number("prefill_seconds");
    p.estimate.max_batch = e.integer("max_batch");
    validate_plan(p, origin);
    return p;
}

Plan read_plan_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    TPS_CHECK_AS(InputError, in.good(), "{}: cannot open plan file", path.string());
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception& e) {
        throw InputError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
    }
    return plan_from_json(j, path.string());
}

void validate_plan(const Plan& p, const std::string& origin) {
    TPS_CHECK_AS(InputError, !p.stages.empty(), "{}: the plan has no stages", origin);
    TPS_CHECK_AS(InputError, !p.devices.empty(), "{}: the plan has no devices", origin);
    int64_t next_layer = 0;
    int world = 0;
    std::set<int> ranks;
    std::set<int> devices_used;
    for (size_t s = 0; s < p.stages.size(); ++s) {
        const StagePlan& st = p.stages[s];
        TPS_CHECK_AS(InputError, st.index == static_cast<int>(s), "{}: stage {} is listed as index {}", origin, s,
                     st.index);
        TPS_CHECK_AS(InputError, st.first_layer == next_layer,
                     "{}: stage {} starts at layer {} but the previous stage ends at {} ({})", origin, s,
                     st.first_layer, next_layer, st.first_layer > next_layer ? "a gap" : "an overlap");
        TPS_CHECK_AS(InputError, st.last_layer > st.first_layer, "{}: stage {} has an empty layer range [{}, {})",
                     origin, s, st.first_layer, st.last_layer);
        TPS_CHECK_AS(InputError, static_cast<int>(st.ranks.size()) == st.tp && static_cast<int>(st.devices.size()) == st.tp,
                     "{}: stage {} has tp={} but lists {} ranks and {} devices", origin, s, st.tp, st.ranks.size(),
                     st.devices.size());
        TPS_CHECK_AS(InputError, st.tp >= 1 && p.model.heads % st.tp == 0, "{}: stage {}: tp={} does not divide {} attention heads",
                     origin, s, st.tp, p.model.heads);
        for (int r : st.ranks) {
            TPS_CHECK_AS(InputError, ranks.insert(r).second, "{}: rank {} appears in more than one place", origin, r);
        }
        for (int d : st.devices) {
            TPS_CHECK_AS(InputError, d >= 0 && d < static_cast<int>(p.devices.size()),
                         "{}: stage {} uses device {} but the plan lists {} devices", origin, s, d, p.devices.size());
            TPS_CHECK_AS(InputError, devices_used.insert(d).second, "{}: device {} is given to two ranks", origin, d);
        }
        next_layer = st.last_layer;
        world += st.tp;
    }
    TPS_CHECK_AS(InputError, next_layer == p.model.layers, "{}: the stages cover layers [0, {}) of {}", origin,
                 next_layer, p.model.layers);
    TPS_CHECK_AS(InputError, world == p.world_size, "{}: world_size {} but the stages hold {} ranks", origin,
                 p.world_size, world);
    TPS_CHECK_AS(InputError, *ranks.rbegin() == world - 1, "{}: ranks must be 0..{}", origin, world - 1);
    TPS_CHECK_AS(InputError, static_cast<int>(p.per_rank.size()) == world, "{}: per_rank lists {} ranks, world is {}",
                 origin, p.per_rank.size(), world);
    for (size_t i = 0; i < p.per_rank.size(); ++i) {
        const RankPlan& r = p.per_rank[i];
        TPS_CHECK_AS(InputError, r.rank == static_cast<int>(i), "{}: per_rank[{}] is rank {}", origin, i, r.rank);
        TPS_CHECK_AS(InputError, r.stage >= 0 && r.stage < static_cast<int>(p.stages.size()),
                     "{}: rank {} is in stage {}, which does not exist", origin, r.rank, r.stage);
        const StagePlan& st = p.stages[static_cast<size_t>(r.stage)];
        TPS_CHECK_AS(InputError, r.tp_rank >= 0 && r.tp_rank < st.tp && st.ranks[static_cast<size_t>(r.tp_rank)] == r.rank,
                     "{}: rank {} claims tp rank {} of stage {}, whose ranks are different", origin, r.rank, r.tp_rank,
                     r.stage);
        TPS_CHECK_AS(InputError, r.device == st.devices[static_cast<size_t>(r.tp_rank)],
                     "{}: rank {} uses device {} but stage {} gives it device {}", origin, r.rank, r.device, r.stage,
                     st.devices[static_cast<size_t>(r.tp_rank)]);
        TPS_CHECK_AS(InputError, r.first_layer == st.first_layer && r.last_layer == st.last_layer,
                     "{}: rank {} holds layers [{}, {}) but its stage holds [{}, {})", origin, r.rank, r.first_layer,
                     r.last_layer, st.first_layer, st.last_layer);
        TPS_CHECK_AS(InputError, r.band.contains(r.bytes.total()),
                     "{}: rank {} is planned at {} bytes, outside its band [{}, {}]", origin, r.rank, r.bytes.total(),
                     r.band.min_bytes, r.band.max_bytes);
    }
}

void check_plan_matches_model(const Plan& p, const ModelDesc& m, const std::string& origin) {
    const std::string fp = model_fingerprint(m);
    const std::string format = weight_format_summary(m);
    // the same model in another weight format: say which flag makes them agree
    TPS_CHECK_AS(InputError,
                 p.model.fingerprint == fp || p.model.weight_format == format || p.model.name != m.name ||
                     p.model.layers != m.layers || p.model.hidden != m.hidden,
                 "{}: this plan was made for {} with {} weights, but the model is loaded with {} weights; give "
                 "--format {} (or make a new plan with `tpserve plan`)",
                 origin, p.model.name, p.model.weight_format, format, p.model.weight_format);
    TPS_CHECK_AS(InputError, p.model.fingerprint == fp,
                 "{}: this plan was made for model {} ({} layers, hidden {}, {}), not for {} ({} layers, hidden {}, {}); "
                 "make a new plan with `tpserve plan`",
                 origin, p.model.name, p.model.layers, p.model.hidden, p.model.weight_format, m.name, m.layers,
                 m.hidden, format);
}

}  // namespace tps
