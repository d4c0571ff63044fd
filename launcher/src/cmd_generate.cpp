// `tpserve generate`: one prompt through the engine, text streamed to stdout as it is decided,
// speeds (and with --verbose, memory against the plan's prediction) on stderr. In one process it
// runs the whole model; under `mpirun -np N` every rank loads only its shard of a plan (--plan
// FILE, or one rank 0 makes for --gpus Nxcpu) and rank 0 drives the steps.
#include "cli.h"
#include "commands.h"
#include "memory_report.h"
#include "mpi_session.h"
#include "shard_setup.h"

#include "tpserve/comm/stage_groups.h"
#include "tpserve/common/strings.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/driver.h"
#include "tpserve/engine/generate.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/gbnf_grammar.h"
#include "tpserve/engine/structured/grammar_constraint.h"
#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/plan_json.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace tps::cli {
namespace {

float float_flag(const cxxopts::ParseResult& r, const std::string& flag) {
    const std::string text = r[flag].as<std::string>();
    const auto v = parse_double(text);
    TPS_CHECK_AS(UsageError, v.has_value(), "--{}: '{}' is not a number", flag, text);
    return static_cast<float>(*v);
}

// Every flag, checked, before anything is loaded.
struct Settings {
    std::string model_path;
    std::string prompt;
    bool chat = false;
    std::string system;
    GenerateOptions gen;
    int threads = 0;  // 0: the host's threads shared by the ranks on it
    DType kv_dtype = DType::f32;
    std::optional<DType> format;  // --format
    int64_t prefill_chunk = 256;
    int64_t max_context = 0;
    std::string plan_file;
    std::string gpus;
    std::vector<int> stage_tp;
    double deadline = kDefaultDeadlineSeconds;
    bool verbose = false;
    bool ignore_eos = false;
    bool kv_dtype_given = false, chunk_given = false, context_given = false;
    BackendChoice backend;
    std::shared_ptr<const structured::CompiledGrammar> grammar;  // --json-schema, --regex, --grammar: the output's format
};

std::string read_text_file(const std::string& path) {
    std::ifstream in(path);
    TPS_CHECK_AS(UsageError, in.good(), "cannot read the file '{}'", path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// --json-schema TEXT, --json-schema-file PATH, --json-object, --regex PATTERN, --grammar GBNF,
// --grammar-file PATH (one at most): the grammar the output follows (docs/api.md, "Structured output").
std::shared_ptr<const structured::CompiledGrammar> output_format(const cxxopts::ParseResult& args) {
    std::vector<std::string> given;
    for (const char* flag : {"json-schema", "json-schema-file", "json-object", "regex", "grammar", "grammar-file"}) {
        if (args.count(flag)) given.push_back(flag);
    }
    if (given.empty()) return nullptr;
    TPS_CHECK_AS(UsageError, given.size() == 1, "--{} and --{} both give the output's format: give one", given[0], given[1]);
    const std::string& flag = given[0];
    try {
        if (flag == "json-object") return structured::json_object_grammar();
        if (flag == "regex") return structured::regex_grammar(args["regex"].as<std::string>());
        if (flag == "grammar") return structured::gbnf_grammar(args["grammar"].as<std::string>());
        if (flag == "grammar-file") return structured::gbnf_grammar(read_text_file(args["grammar-file"].as<std::string>()));
        if (flag == "json-schema") return structured::json_schema_grammar(args["json-schema"].as<std::string>());
        return structured::json_schema_grammar(read_text_file(args["json-schema-file"].as<std::string>()));
    } catch (const UsageError& e) {
        throw UsageError(fmt::format("--{}: {}", flag, e.what()));
    }
}

// The sampler's constraint for the output's format, over this tokenizer and these stop tokens.
void constrain(const Settings& s, const Tokenizer& tok, GenerateOptions& gen) {
    if (!s.grammar) return;
    auto tokens = std::make_shared<structured::GrammarTokens>(s.grammar, std::make_shared<const structured::TokenBytes>(tok),
                                                              gen.stop_ids);
    try {
        gen.sampling.constraint = structured::make_grammar_constraint(std::move(tokens));
    } catch (const UsageError& e) {
        throw UsageError(fmt::format("the output's format: {}", e.what()));
    }
}

Settings read_settings(const cxxopts::ParseResult& args) {
    Settings s;
    TPS_CHECK_AS(UsageError, args.count("model"), "--model is required (an HF model directory or a .gguf file)");
    TPS_CHECK_AS(UsageError, args.count("prompt"), "--prompt is required");
    s.model_path = args["model"].as<std::string>();
    s.prompt = args["prompt"].as<std::string>();
    s.chat = args.count("chat") > 0;
    s.system = args["system"].as<std::string>();
    s.gen.max_tokens = int_flag(args, "max-tokens", 1, 1 << 20);
    SamplingParams& p = s.gen.sampling;
    p.temperature = float_flag(args, "temperature");
    p.top_k = static_cast<int32_t>(int_flag(args, "top-k", 0, 1 << 24));
    p.top_p = float_flag(args, "top-p");
    p.min_p = float_flag(args, "min-p");
    p.repetition_penalty = float_flag(args, "repetition-penalty");
    p.presence_penalty = float_flag(args, "presence-penalty");
    p.frequency_penalty = float_flag(args, "frequency-penalty");
    p.seed = static_cast<uint64_t>(int_flag(args, "seed", 0, INT64_MAX));
    try {
        Sampler::validate(p);
    } catch (const UsageError& e) {
        throw UsageError(fmt::format("--{}", e.what()));  // "--temperature -1 must be ..."
    }
    if (args.count("stop")) s.gen.stop = args["stop"].as<std::vector<std::string>>();
    s.threads = threads_flag(args);
    s.kv_dtype = kv_dtype_flag(args);
    s.format = weight_format_flag(args);
    s.prefill_chunk = int_flag(args, "prefill-chunk", 1, 1 << 16);
    s.max_context = int_flag(args, "max-context", 0, int64_t{1} << 24);
    s.kv_dtype_given = args["kv-dtype"].count() > 0;
    s.chunk_given = args["prefill-chunk"].count() > 0;
    s.context_given = args["max-context"].count() > 0;
    if (args.count("plan")) s.plan_file = args["plan"].as<std::string>();
    if (args.count("gpus")) s.gpus = args["gpus"].as<std::string>();
    if (args.count("stages")) s.stage_tp = parse_stage_tp(args["stages"].as<std::string>());
    TPS_CHECK_AS(UsageError, s.plan_file.empty() || (s.gpus.empty() && s.stage_tp.empty()),
                 "--plan gives the split; --gpus and --stages make one: give one or the other");
    TPS_CHECK_AS(UsageError, s.plan_file.empty() || (!s.kv_dtype_given && !s.chunk_given && !s.context_given),
                 "--plan fixes the KV type, context and prefill chunk (its serving shape); drop --kv-dtype, "
                 "--max-context and --prefill-chunk");
    s.backend = backend_flag(args);
    s.deadline = seconds_flag(args, "deadline");
    s.verbose = args.count("verbose") > 0;
    s.ignore_eos = args.count("ignore-eos") > 0;
    s.grammar = output_format(args);
    return s;
}

// What the planner is asked for: one sequence of the context asked, on `ranks` ranks of the
// backend's devices (or those --gpus names). `devices` overrides both (the memory report's
// stand-in device).
PlanRequest plan_request(const Settings& s, const ModelDesc& m, int ranks, bool forced_shape = true,
                         const std::string& devices = "") {
    CpuServing serving;
    serving.max_context = s.max_context;
    serving.prefill_chunk = s.prefill_chunk;
    serving.kv_dtype = s.kv_dtype;
    if (forced_shape) serving.stage_tp = s.stage_tp;
    if (!devices.empty()) return serving_plan_request(m, devices, ranks, serving, "generate", false);
    return serving_plan_request(m, s.gpus, ranks, serving, "generate", s.backend.cuda, s.backend.device);
}

void stream(std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
}

void print_speed(const GenerateResult& r) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
    const double decode_rate =
        r.generated_tokens > 1 && r.decode_seconds > 0 ? static_cast<double>(r.generated_tokens - 1) / r.decode_seconds : 0;
    std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s (%.1f tok/s); stop: %s\n",
                 static_cast<long long>(r.prompt_tokens), r.prefill_seconds,
                 static_cast<double>(r.prompt_tokens) / std::max(r.prefill_seconds, 1e-9),
                 static_cast<long long>(r.generated_tokens), r.decode_seconds, decode_rate, r.finish_reason.c_str());
}

// One process, the whole model.
int run_single(const Settings& s) {
    const ModelFiles files = open_model(s.model_path, s.format);
    const int64_t context = resolve_context(s.max_context, files.desc);
    GenerateOptions gen = s.gen;
    if (!s.ignore_eos) gen.stop_ids = files.stop_ids;
    constrain(s, *files.tokenizer, gen);
    const std::vector<int32_t> prompt = files.encode_prompt(s.prompt, s.chat, s.system);

    auto backend = s.backend.cuda ? make_cuda_backend(s.backend.device) : make_cpu_backend(s.threads);
    check_backend_computes(files.desc, *backend);  // (before the weights load)
    LlamaWeights weights = load_llama_weights(files.weights, files.desc, {});
    ModelOptions mo;
    mo.max_step_tokens = std::min(s.prefill_chunk, context);  // activations are sized for it: no larger than needed
    mo.kv_tokens = context;
    mo.kv_dtype = s.kv_dtype;
    mo.max_logit_rows = 1;
    LlamaModel model(files.desc, std::move(weights), *backend, mo);
    print_speed(generate(model, *files.tokenizer, prompt, gen, stream));
    if (s.verbose) {
        // capacity irrelevant: bytes only (a GPU's plan adds the step workspace and the runtime)
        const PlanRequest req =
            plan_request(s, files.desc, 1, /*forced_shape=*/false, s.backend.cuda ? "card:1024:1000:100" : "cpu:1024:10:1");
        const ShapeFit fit = fit_shape(req, {StageShape{{0}}});
        std::fputs(memory_report("one process, the whole model", model, fit.feasible ? &fit.plan.per_rank[0].bytes : nullptr,
                                 fit.reason)
                       .c_str(),
                   stderr);
    }
    return kExitOk;
}

// Every rank: its shard of the plan; rank 0 drives, the others follow.
int run_sharded(const Settings& s) {
    TPS_CHECK_AS(UsageError, s.backend.device == 0,
                 "--device is for one process; under mpirun each rank takes its host's GPUs in rank order");
    MpiWorld& mpi = mpi_world();
    mpi.set_deadline(s.deadline);
    const int rank = mpi.rank();
    // loading and planning may take a while on some ranks; a stalled start-up still ends
    const double startup = std::min(86400.0, std::max(600.0, 10 * s.deadline));

    ShardRequest req;
    req.model_path = s.model_path;
    req.plan_file = s.plan_file;
    req.format = s.format;
    req.make_request = [&](const ModelDesc& m, int world_size) {
        return plan_request(s, m, world_size);
    };
    req.cuda = s.backend.cuda;
    req.threads = s.threads;
    req.startup_deadline = startup;
    const std::unique_ptr<Shard> shard = load_shard(mpi, req);
    const ModelFiles& files = shard->files;
    const Plan& plan = shard->plan;
    const ParallelMapping& map = *shard->map;
    Communicator* world = shard->world.get();
    std::optional<LlamaModel>& model = shard->model;
    const StageLinks& links = *shard->links;

    std::vector<int32_t> prompt;
    GenerateOptions gen = s.gen;
    gen.stop_ids = files.stop_ids;
    agree(*world, "take the prompt", [&] {
        if (rank != 0) return;
        prompt = files.encode_prompt(s.prompt, s.chat, s.system);
        TPS_CHECK_AS(UsageError, !prompt.empty(), "the prompt is empty");
        TPS_CHECK_AS(UsageError, static_cast<int64_t>(prompt.size()) < model->context_tokens(),
                     "the prompt has {} tokens; the context holds {}", prompt.size(), model->context_tokens());
    }, startup);
    if (s.ignore_eos) gen.stop_ids.clear();
    if (rank == 0) constrain(s, *files.tokenizer, gen);  // (rank 0 samples)
    shard->reset_comm_stats();  // from here on: time in collectives of the steps alone

    if (rank == 0) {
        Driver driver(*model, &links, shard->control.get());
        const GenerateResult r = generate(driver, *files.tokenizer, prompt, gen, stream);
        driver.shutdown();
        print_speed(r);
    } else {
        run_worker(*model, links, *shard->control);
    }

    if (s.verbose) {
        std::string report = memory_report(map.describe(), *model, &plan.per_rank.at(static_cast<size_t>(rank)).bytes, "");
        report += comm_report(*world, model->steps_run());
        for (const auto* c : shard->stage_comms()) report += comm_report(*c, model->steps_run());
        if (rank == 0) {
            std::fputs(report.c_str(), stderr);
            for (int r = 1; r < mpi.size(); ++r) {
                const auto bytes = world->receive_message(r, "a rank's memory report");
                std::fwrite(bytes.data(), 1, bytes.size(), stderr);
            }
        } else {
            world->post_message(std::vector<uint8_t>(report.begin(), report.end()), 0, "this rank's memory report");
        }
    }
    world->flush_posted("the last messages to rank 0");
    world->barrier("the end of the run");
    return kExitOk;
}

}  // namespace

int run_generate(int argc, char** argv) {
    cxxopts::Options options("tpserve generate",
                             "Generate text from a prompt on this machine's CPU (or one GPU), streamed to stdout; under mpirun -np N, "
                             "split across N ranks as a plan says.");
    options.set_width(100);
    // clang-format off
    options.add_options()
        ("m,model", "HF model directory or .gguf file", cxxopts::value<std::string>())
        ("p,prompt", "the prompt", cxxopts::value<std::string>())
        ("chat", "format the prompt with the model's chat template (one user message)")
        ("system", "a system message for --chat", cxxopts::value<std::string>()->default_value(""))
        ("n,max-tokens", "most tokens to generate", cxxopts::value<std::string>()->default_value("128"))
        ("temperature", "0 = greedy (the default, as transformers' generate without sampling)", cxxopts::value<std::string>()->default_value("0"))
        ("top-k", "keep the k most likely tokens (0 = off)", cxxopts::value<std::string>()->default_value("0"))
        ("top-p", "nucleus sampling mass (1 = off)", cxxopts::value<std::string>()->default_value("1"))
        ("min-p", "drop tokens below this fraction of the top probability (0 = off)", cxxopts::value<std::string>()->default_value("0"))
        ("repetition-penalty", "HF-style repetition penalty (1 = off)", cxxopts::value<std::string>()->default_value("1"))
        ("presence-penalty", "OpenAI-style presence penalty", cxxopts::value<std::string>()->default_value("0"))
        ("frequency-penalty", "OpenAI-style frequency penalty", cxxopts::value<std::string>()->default_value("0"))
        ("seed", "random seed (same seed, same tokens)", cxxopts::value<std::string>()->default_value("0"))
        ("stop", "stop string (repeatable)", cxxopts::value<std::vector<std::string>>())
        ("ignore-eos", "go on past the model's end-of-sequence tokens (for benchmarks)")
        ("json-schema", "the output is JSON valid under this schema (JSON text; docs/api.md says what is supported)", cxxopts::value<std::string>())
        ("json-schema-file", "the same, the schema read from a file", cxxopts::value<std::string>())
        ("json-object", "the output is a JSON object")
        ("regex", "the output is a full match of this regular expression", cxxopts::value<std::string>())
        ("grammar", "the output follows this GBNF grammar (llama.cpp's format, from its rule root)", cxxopts::value<std::string>())
        ("grammar-file", "the same, the grammar read from a file (llama.cpp's grammars/*.gbnf work)", cxxopts::value<std::string>())
        ("max-context", "KV cache tokens (default: the model's context, at most 4096)", cxxopts::value<std::string>()->default_value("0"))
        ("prefill-chunk", "prompt tokens per step", cxxopts::value<std::string>()->default_value("256"))
        ("v,verbose", "print each rank's memory beside the plan's prediction, and time in collectives")
        ("h,help", "show this help");
    // clang-format on
    add_model_run_flags(options);
    const auto args = parse(options, argc, argv);
    if (args.count("help")) {
        std::fputs(options.help().c_str(), stdout);
        return kExitOk;
    }
    const Settings s = read_settings(args);
    if (launched_by_mpi()) return run_sharded(s);
    if (!s.plan_file.empty() || !s.gpus.empty() || !s.stage_tp.empty()) {
        // a one-rank plan runs in this process; a larger one needs mpirun (ParallelMapping says so)
        const ModelFiles files = open_model(s.model_path, s.format);
        const Plan plan = one_process_plan(s.plan_file, files.desc,
                                           [&] { return plan_request(s, files.desc, 1); });
        const ParallelMapping map(plan, 1, 0);
        (void)map;
    }
    return run_single(s);
}

}  // namespace tps::cli
