// `tpserve generate`: one prompt through the engine on this machine's CPU, text streamed to
// stdout as it is decided, speeds (and with --verbose, memory against the planner's prediction)
// on stderr.
#include "cli.h"
#include "commands.h"

#include "tpserve/common/strings.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/generate.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>

#include <cstdio>
#include <thread>

namespace tps::cli {
namespace {

float float_flag(const cxxopts::ParseResult& r, const std::string& flag) {
    const std::string text = r[flag].as<std::string>();
    const auto v = parse_double(text);
    TPS_CHECK_AS(UsageError, v.has_value(), "--{}: '{}' is not a number", flag, text);
    return static_cast<float>(*v);
}

// What the planner predicts for this model on one cpu device with this serving shape, set beside
// what the engine holds.
void print_memory(const ModelFiles& files, const LlamaModel& model, int64_t kv_tokens) {
    const LlamaWeights& weights_view = model.weights();
    const MemoryTotals t = MemoryTracker::instance().totals();
    auto held = [&](MemoryTag tag) { return t.current[static_cast<size_t>(tag)]; };
    PlanRequest req;
    req.model = files.desc;
    req.devices = parse_device_list("cpu:1024:10:1");  // capacity is irrelevant: one rank, predicted bytes only
    req.bands = {Band{0, req.devices[0].memory_bytes}};
    req.link = link_for_devices(req.devices, std::nullopt, std::nullopt);
    req.serving.max_batch = 1;
    req.serving.max_context = kv_tokens;
    req.serving.kv_dtype = model.options().kv_dtype;
    req.serving.prefill_chunk = model.options().max_step_tokens;
    req.serving = resolve_serving(req.model, req.serving);
    const ShapeFit fit = fit_shape(req, {StageShape{{0}}});
    std::fprintf(stderr, "memory (MiB)   engine holds   planner predicts\n");
    auto row = [](const char* what, double have, double want) {
        std::fprintf(stderr, "  %-12s %12.1f %18.1f\n", what, have / 1048576.0, want / 1048576.0);
    };
    const MemoryBytes* plan = fit.feasible ? &fit.plan.per_rank[0].bytes : nullptr;
    row("weights", static_cast<double>(held(MemoryTag::weights) + weights_view.mapped_bytes()),
        plan ? static_cast<double>(plan->weights) : 0);
    std::fprintf(stderr, "    (checkpoint bytes read: %lld; %lld of them used in place from the mapped file)\n",
                 static_cast<long long>(weights_view.checkpoint_bytes), static_cast<long long>(weights_view.mapped_bytes()));
    row("kv_cache", static_cast<double>(held(MemoryTag::kv_cache)), plan ? static_cast<double>(plan->kv_cache) : 0);
    row("activations", static_cast<double>(held(MemoryTag::activations)), plan ? static_cast<double>(plan->activations) : 0);
    row("workspace", static_cast<double>(held(MemoryTag::workspace)), 0);
    if (!fit.feasible) std::fprintf(stderr, "  (planner: %s)\n", fit.reason.c_str());
}

}  // namespace

int run_generate(int argc, char** argv) {
    cxxopts::Options options("tpserve generate", "Generate text from a prompt on this machine's CPU, streamed to stdout.");
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
        ("threads", "CPU threads (0 = all)", cxxopts::value<std::string>()->default_value("0"))
        ("max-context", "KV cache tokens (default: the model's context, at most 4096)", cxxopts::value<std::string>()->default_value("0"))
        ("kv-dtype", "KV cache type: f32, f16, bf16", cxxopts::value<std::string>()->default_value("f32"))
        ("prefill-chunk", "prompt tokens per step", cxxopts::value<std::string>()->default_value("256"))
        ("v,verbose", "print memory held per category beside the planner's prediction")
        ("h,help", "show this help");
    // clang-format on
    const auto args = parse(options, argc, argv);
    if (args.count("help")) {
        std::fputs(options.help().c_str(), stdout);
        return kExitOk;
    }
    TPS_CHECK_AS(UsageError, args.count("model"), "--model is required (an HF model directory or a .gguf file)");
    TPS_CHECK_AS(UsageError, args.count("prompt"), "--prompt is required");

    GenerateOptions gen;
    gen.max_tokens = int_flag(args, "max-tokens", 1, 1 << 20);
    SamplingParams& s = gen.sampling;
    s.temperature = float_flag(args, "temperature");
    s.top_k = static_cast<int32_t>(int_flag(args, "top-k", 0, 1 << 24));
    s.top_p = float_flag(args, "top-p");
    s.min_p = float_flag(args, "min-p");
    s.repetition_penalty = float_flag(args, "repetition-penalty");
    s.presence_penalty = float_flag(args, "presence-penalty");
    s.frequency_penalty = float_flag(args, "frequency-penalty");
    s.seed = static_cast<uint64_t>(int_flag(args, "seed", 0, INT64_MAX));
    try {
        Sampler::validate(s);
    } catch (const UsageError& e) {
        throw UsageError(fmt::format("--{}", e.what()));  // "--temperature -1 must be ..."
    }
    if (args.count("stop")) gen.stop = args["stop"].as<std::vector<std::string>>();
    const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int threads = static_cast<int>(int_flag(args, "threads", 0, 4 * hardware));
    const std::string kv = args["kv-dtype"].as<std::string>();
    const auto kv_type = parse_dtype(kv);
    TPS_CHECK_AS(UsageError, kv_type && (*kv_type == DType::f32 || *kv_type == DType::f16 || *kv_type == DType::bf16),
                 "--kv-dtype: '{}' is not f32, f16 or bf16", kv);
    const int64_t chunk = int_flag(args, "prefill-chunk", 1, 1 << 16);
    int64_t context = int_flag(args, "max-context", 0, int64_t{1} << 24);

    const ModelFiles files = ModelFiles::open(args["model"].as<std::string>());
    if (context == 0) context = std::min<int64_t>(files.desc.max_context, 4096);
    TPS_CHECK_AS(UsageError, context <= files.desc.max_context, "--max-context: {} exceeds the model's context of {}",
                 context, files.desc.max_context);
    gen.stop_ids = files.stop_ids;
    const std::vector<int32_t> prompt =
        files.encode_prompt(args["prompt"].as<std::string>(), args.count("chat") > 0, args["system"].as<std::string>());

    auto backend = make_cpu_backend(threads);
    LlamaWeights weights = load_llama_weights(files.weights, files.desc, {});
    ModelOptions mo;
    mo.max_step_tokens = std::min(chunk, context);  // activations are sized for it: no larger than needed
    mo.kv_tokens = context;
    mo.kv_dtype = *kv_type;
    mo.max_logit_rows = 1;
    LlamaModel model(files.desc, std::move(weights), *backend, mo);

    const GenerateResult r = generate(model, *files.tokenizer, prompt, gen, [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
    });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    const double decode_rate =
        r.generated_tokens > 1 && r.decode_seconds > 0 ? static_cast<double>(r.generated_tokens - 1) / r.decode_seconds : 0;
    std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s (%.1f tok/s); stop: %s\n",
                 static_cast<long long>(r.prompt_tokens), r.prefill_seconds,
                 static_cast<double>(r.prompt_tokens) / std::max(r.prefill_seconds, 1e-9),
                 static_cast<long long>(r.generated_tokens), r.decode_seconds, decode_rate, r.finish_reason.c_str());
    if (args.count("verbose")) print_memory(files, model, context);
    return kExitOk;
}

}  // namespace tps::cli
