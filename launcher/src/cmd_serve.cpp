// `tpserve serve`: the OpenAI-compatible HTTP server (docs/api.md). In one process it runs the
// whole model; under `mpirun -np N` every rank loads its shard of a plan (--plan FILE, or one rank
// 0 makes for --gpus Nxcpu), rank 0 runs the HTTP front end and the scheduler, and the others
// follow rank 0's steps. The HTTP side is up before the model loads (/health answers 503 until it
// is ready). SIGINT / SIGTERM to rank 0: stop accepting, end what waits, finish what runs, then
// every rank exits 0.
#include "cli.h"
#include "commands.h"
#include "memory_report.h"
#include "mpi_session.h"
#include "rank_report.h"
#include "shard_setup.h"

#include "tpserve/common/strings.h"
#include "tpserve/engine/driver.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/plan_json.h"
#include "tpserve/partition/planner.h"
#include "tpserve/serve/api.h"
#include "tpserve/serve/http_server.h"
#include "tpserve/serve/reasoning.h"
#include "tpserve/serve/scheduler.h"
#include "tpserve/serve/serve_log.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

namespace tps::cli {
namespace {

namespace net = boost::asio;
using namespace tps::serve;

struct Settings {
    std::string model_path;
    std::string host;
    int port = 8000;
    std::vector<std::string> served_names;  // --served-model-name a,b (empty: the model's folder or file name)
    int64_t max_batch = 16;
    int64_t max_context = 0;
    int64_t prefill_chunk = 256;
    int64_t max_queue = 64;
    double request_timeout = 600;
    int64_t max_body = 1 << 20;
    DType kv_dtype = DType::f32;
    std::optional<DType> format;  // --format
    int threads = 0;
    BackendChoice backend;
    int http_threads = 2;
    int micro_batches = 0;  // 0: one per pipeline stage
    std::string plan_file;
    std::string gpus;
    std::vector<int> stage_tp;
    double deadline = kDefaultDeadlineSeconds;
    bool verbose = false;
    bool model_sampling = true;  // --generation-config auto: the model's sampling defaults
    bool prefix_cache = true;    // --prefix-cache on
    bool priority = false;       // --scheduling-policy priority
    int64_t responses_store_mib = 64;  // --responses-store-mib
    std::string tool_parser = "auto";  // --tool-call-parser
    std::string reasoning_parser = "auto";  // --reasoning-parser
    std::string api_key;                    // --api-key, or TPSERVE_API_KEY
    bool log_requests = false;              // --log-requests
    int64_t log_stats_interval = 10;        // --log-stats-interval, seconds (0: no stats lines)
    CorsPolicy cors;                        // --allowed-origins, --allowed-methods, --allowed-headers, --allow-credentials
};

// A comma-separated flag: its entries, none of them empty (an empty flag: none at all).
std::vector<std::string> list_flag(const cxxopts::ParseResult& args, const char* name) {
    const std::string text = args[name].as<std::string>();
    std::vector<std::string> out;
    for (const std::string& entry : text.empty() ? std::vector<std::string>() : split(text, ',')) {
        const std::string_view one = trim(entry);
        TPS_CHECK_AS(UsageError, !one.empty(), "--{}: '{}' holds an empty entry", name, text);
        out.emplace_back(one);
    }
    return out;
}

Settings read_settings(const cxxopts::ParseResult& args) {
    Settings s;
    TPS_CHECK_AS(UsageError, args.count("model"), "--model is required (an HF model directory or a .gguf file)");
    s.model_path = args["model"].as<std::string>();
    s.host = args["host"].as<std::string>();
    s.port = static_cast<int>(int_flag(args, "port", 0, 65535));
    const std::string names = args["served-model-name"].as<std::string>();
    for (std::string& one : names.empty() ? std::vector<std::string>() : split(names, ',')) {
        TPS_CHECK_AS(UsageError, !one.empty(), "--served-model-name: '{}' holds an empty name", names);
        TPS_CHECK_AS(UsageError, std::find(s.served_names.begin(), s.served_names.end(), one) == s.served_names.end(),
                     "--served-model-name: '{}' is given twice", one);
        s.served_names.push_back(std::move(one));
    }
    s.max_batch = int_flag(args, "max-batch", 1, 4096);
    s.max_context = int_flag(args, "max-context", 0, int64_t{1} << 24);
    s.prefill_chunk = int_flag(args, "prefill-chunk", 1, 1 << 16);
    s.max_queue = int_flag(args, "max-queue", 0, 1 << 20);
    s.request_timeout = seconds_flag(args, "request-timeout");
    s.max_body = int_flag(args, "max-body-bytes", 1024, int64_t{1} << 30);
    s.kv_dtype = kv_dtype_flag(args);
    s.format = weight_format_flag(args);
    s.threads = threads_flag(args);
    s.backend = backend_flag(args);
    s.http_threads = static_cast<int>(int_flag(args, "http-threads", 1, 64));
    s.micro_batches = static_cast<int>(int_flag(args, "micro-batches", 0, 64));
    if (args.count("plan")) s.plan_file = args["plan"].as<std::string>();
    if (args.count("gpus")) s.gpus = args["gpus"].as<std::string>();
    if (args.count("stages")) s.stage_tp = parse_stage_tp(args["stages"].as<std::string>());
    TPS_CHECK_AS(UsageError, s.plan_file.empty() || (s.gpus.empty() && s.stage_tp.empty()),
                 "--plan gives the split; --gpus and --stages make one: give one or the other");
    const bool shape_given = args["kv-dtype"].count() || args["max-context"].count() || args["prefill-chunk"].count() ||
                             args["max-batch"].count();
    TPS_CHECK_AS(UsageError, s.plan_file.empty() || !shape_given,
                 "--plan fixes the serving shape (batch, context, KV type, prefill chunk); drop --max-batch, "
                 "--max-context, --kv-dtype and --prefill-chunk");
    s.deadline = seconds_flag(args, "deadline");
    s.verbose = args.count("verbose") > 0;
    s.log_requests = args.count("log-requests") > 0;
    s.log_stats_interval = int_flag(args, "log-stats-interval", 0, 86400);
    s.cors.origins = list_flag(args, "allowed-origins");
    s.cors.methods = list_flag(args, "allowed-methods");
    s.cors.headers = list_flag(args, "allowed-headers");
    s.cors.credentials = args.count("allow-credentials") > 0;
    TPS_CHECK_AS(UsageError, !s.cors.credentials || s.cors.on(), "--allow-credentials needs --allowed-origins");
    const std::string pc = args["prefix-cache"].as<std::string>();
    TPS_CHECK_AS(UsageError, pc == "on" || pc == "off", "--prefix-cache: '{}' is not on or off", pc);
    s.prefix_cache = pc == "on";
    const std::string policy = args["scheduling-policy"].as<std::string>();
    TPS_CHECK_AS(UsageError, policy == "fcfs" || policy == "priority", "--scheduling-policy: '{}' is not fcfs or priority", policy);
    s.priority = policy == "priority";
    s.responses_store_mib = int_flag(args, "responses-store-mib", 0, int64_t{1} << 20);
    const std::string gen = args["generation-config"].as<std::string>();
    TPS_CHECK_AS(UsageError, gen == "auto" || gen == "none", "--generation-config: '{}' is not auto or none", gen);
    s.model_sampling = gen == "auto";
    s.tool_parser = args["tool-call-parser"].as<std::string>();
    if (s.tool_parser != "auto") (void)tool_parser_named(s.tool_parser, {});  // a bad name fails now, not after loading
    s.reasoning_parser = args["reasoning-parser"].as<std::string>();
    (void)reasoning_parser_named(s.reasoning_parser, {});
    if (args.count("api-key")) {
        s.api_key = args["api-key"].as<std::string>();
        TPS_CHECK_AS(UsageError, !s.api_key.empty(), "--api-key: the key is empty");
    } else if (const char* env = std::getenv("TPSERVE_API_KEY"); env && *env) {
        s.api_key = env;  // (kept out of the command line, where every user's `ps` sees it)
    }
    return s;
}

PlanRequest plan_request(const Settings& s, const ModelDesc& m, int ranks) {
    CpuServing serving;
    serving.max_batch = s.max_batch;
    serving.max_context = s.max_context;
    serving.prefill_chunk = s.prefill_chunk;
    serving.kv_dtype = s.kv_dtype;
    serving.stage_tp = s.stage_tp;
    return serving_plan_request(m, s.gpus, ranks, serving, "serve", s.backend.cuda, s.backend.device);
}

// Per-rank figures into the metrics (counters move by what was added since the last report).
// Taken on the engine thread, read by /v1/plan on the HTTP threads.
class ReportSink {
public:
    ReportSink(ServeMetrics& m, const Plan& plan) : m_(m), plan_(plan) {}
    void take(const std::vector<std::vector<uint8_t>>& reports) {
        std::lock_guard lock(mu_);
        for (const auto& bytes : reports) {
            const RankReport r = decode_report(bytes);
            Seen& seen = seen_[r.rank];
            m_.step_seconds(r.rank, r.stage).inc(std::max(0.0, r.step_seconds - seen.step));
            m_.collective_seconds(r.rank, r.stage).inc(std::max(0.0, r.collective_seconds - seen.collective));
            seen = {r.step_seconds, r.collective_seconds};
            const auto set = [&](const char* category, int64_t actual, int64_t predicted) {
                m_.rank_memory(r.rank, category, "actual").set(static_cast<double>(actual));
                m_.rank_memory(r.rank, category, "predicted").set(static_cast<double>(predicted));
            };
            const MemoryBytes& p = plan_.per_rank.at(static_cast<size_t>(r.rank)).bytes;
            set("weights", r.actual.weights, p.weights);
            set("kv_cache", r.actual.kv_cache, p.kv_cache);
            set("activations", r.actual.activations, p.activations);
            set("total", r.actual.total(), p.total());
            latest_[r.rank] = r;
        }
    }
    // The plan's JSON with each rank's measured bytes beside the prediction.
    std::string plan_json() const {
        std::lock_guard lock(mu_);
        nlohmann::json j = plan_to_json(plan_);
        for (auto& pr : j["per_rank"]) {
            const auto it = latest_.find(pr["rank"].get<int>());
            if (it == latest_.end()) continue;
            const MemoryBytes& a = it->second.actual;
            pr["actual"] = {{"weights", a.weights}, {"kv_cache", a.kv_cache}, {"activations", a.activations},
                            {"runtime", a.runtime}, {"total", a.total()}};
        }
        return j.dump(2);
    }

private:
    struct Seen {
        double step = 0, collective = 0;
    };
    ServeMetrics& m_;
    const Plan& plan_;
    mutable std::mutex mu_;
    std::map<int, Seen> seen_;
    std::map<int, RankReport> latest_;
};

// Rank 0's HTTP side: listening (and answering /health with 503) before the model loads.
class Frontend {
public:
    explicit Frontend(const Settings& s)
        : metrics_(registry_),
          api_(metrics_, s.api_key, static_cast<size_t>(s.responses_store_mib) << 20),
          http_(io_, api_, HttpLimits{s.max_body, int64_t{16} << 10, 120, s.log_requests, s.cors}),
          signals_(io_, SIGINT, SIGTERM),
          stats_(io_),
          stats_every_(std::chrono::seconds(s.log_stats_interval)) {
        port_ = http_.listen(s.host, static_cast<uint16_t>(s.port));
        http_.start();
        wait_signal();
        for (int i = 0; i < s.http_threads; ++i) {
            threads_.emplace_back([this] {
                for (;;) {
                    try {
                        io_.run();
                        return;
                    } catch (const std::exception& e) {
                        // one connection's failure must not end the server
                        std::fprintf(stderr, "tpserve serve: HTTP thread: %s\n", e.what());
                    }
                }
            });
        }
        std::fprintf(stderr, "tpserve serve: listening on http://%s:%u (loading the model)\n", s.host.c_str(),
                     static_cast<unsigned>(port_));
        if (!s.api_key.empty()) {
            std::fprintf(stderr, "tpserve serve: an API key is required (Authorization: Bearer, or x-api-key); the chat page, /health and "
                         "/metrics are open\n");
        }
    }
    ~Frontend() { shutdown(); }
    // Stops the HTTP threads (before what the Api points to goes away). Idempotent.
    void shutdown() {
        work_.reset();
        io_.stop();
        for (auto& t : threads_) {
            if (t.joinable()) t.join();
        }
    }

    ServeMetrics& metrics() noexcept { return metrics_; }
    Api& api() noexcept { return api_; }
    uint16_t port() const noexcept { return port_; }

    // Serving: a signal from now on stops `scheduler`; one that came while loading stops it at once.
    void serving(Scheduler* scheduler) {
        std::lock_guard lock(mu_);
        scheduler_ = scheduler;
        if (stop_asked_ && scheduler) scheduler->stop();
        if (scheduler && stats_every_.count() > 0) {
            net::post(io_, [this] {
                last_ = StatsSample::of(metrics_);
                log_stats();
            });
        }
    }
    bool stop_asked() {
        std::lock_guard lock(mu_);
        return stop_asked_;
    }
    // After the scheduler returned: let sessions write their last bytes (at most 5 s).
    void drain() {
        for (int i = 0; i < 500 && http_.active_generations() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

private:
    // Every --log-stats-interval seconds while there is work: throughput and load (serve_log.h).
    void log_stats() {
        stats_.expires_after(stats_every_);
        stats_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            const StatsSample now = StatsSample::of(metrics_);
            if (const auto line = stats_line(last_, now, std::chrono::duration<double>(stats_every_).count())) {
                std::fprintf(stderr, "%s\n", line->c_str());
            }
            last_ = now;
            log_stats();
        });
    }

    void wait_signal() {
        signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
            if (ec) return;
            std::lock_guard lock(mu_);
            if (stop_asked_) {
                std::fprintf(stderr, "tpserve serve: second signal %d: exiting now\n", sig);
                std::_Exit(128 + sig);
            }
            stop_asked_ = true;
            std::fprintf(stderr, "tpserve serve: signal %d: no new requests; finishing the running ones (a second signal ends at once)\n", sig);
            http_.stop_accepting();
            api_.stopping();
            if (scheduler_) scheduler_->stop();
            wait_signal();
        });
    }

    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(io_);
    MetricsRegistry registry_;
    ServeMetrics metrics_;
    Api api_;
    HttpServer http_;
    net::signal_set signals_;
    net::steady_timer stats_;
    std::chrono::seconds stats_every_;
    StatsSample last_;  // (on the timer's thread only)
    uint16_t port_ = 0;
    std::vector<std::thread> threads_;
    std::mutex mu_;
    Scheduler* scheduler_ = nullptr;
    bool stop_asked_ = false;
};

ServedModel served_model(const Settings& s, const ModelFiles& files, const LlamaModel& model, const Plan& plan) {
    ServedModel m;
    // --served-model-name a,b: the first is the model's name, the others more names for it
    if (!s.served_names.empty()) {
        m.name = s.served_names.front();
        m.aliases.assign(s.served_names.begin() + 1, s.served_names.end());
    }
    if (m.name.empty()) {
        const std::filesystem::path p = std::filesystem::path(s.model_path).lexically_normal();
        m.name = (p.has_filename() ? p : p.parent_path()).filename().string();
        if (m.name.size() > 5 && m.name.ends_with(".gguf")) m.name.resize(m.name.size() - 5);
    }
    m.tokenizer = files.tokenizer.get();
    m.chat_template = files.chat_template ? &*files.chat_template : nullptr;
    m.bos_token = files.bos_token;
    m.eos_token = files.eos_token;
    m.stop_ids = files.stop_ids;
    m.context = std::min(model.context_tokens(), plan.serving.max_context);
    m.vocab = model.desc().vocab;
    m.created = static_cast<int64_t>(std::time(nullptr));
    m.priority_scheduling = s.priority;
    m.tool_parser = tool_parser_named(s.tool_parser, files.chat_template_source);
    m.token_bytes = std::make_shared<structured::TokenBytes>(*files.tokenizer);
    if (m.tool_parser != ToolParser::none) {
        std::fprintf(stderr, "tpserve serve: tool calls in chat output are read as %s (%s; --tool-call-parser none leaves them text)\n",
                     tool_parser_name(m.tool_parser), s.tool_parser == "auto" ? "from the chat template" : "--tool-call-parser");
    }
    m.reasons = reasoning_parser_named(s.reasoning_parser, files.chat_template_source);
    if (m.reasons) {
        std::fprintf(stderr, "tpserve serve: chat output is read as <think> reasoning, then the answer: reasoning_content and content "
                     "(%s; --reasoning-parser none leaves it all content)\n",
                     s.reasoning_parser == "auto" ? "the chat template writes </think>" : "--reasoning-parser");
    }
    if (s.model_sampling && !files.sampling_defaults.empty()) {
        m.sampling_defaults = files.sampling_defaults.over(m.sampling_defaults);
        std::fprintf(stderr, "tpserve serve: sampling defaults from %s: %s (a request's own fields win; "
                     "--generation-config none for OpenAI's)\n",
                     files.sampling_defaults.origin.c_str(), files.sampling_defaults.describe().c_str());
    }
    return m;
}

SchedulerOptions scheduler_options(const Settings& s, const Plan& plan, int64_t context) {
    SchedulerOptions o;
    o.max_batch = plan.serving.max_batch;
    o.max_queue = s.max_queue;
    o.step_tokens = plan.serving.prefill_chunk;
    o.context = context;
    o.request_timeout = s.request_timeout;
    o.micro_batches = s.micro_batches > 0 ? s.micro_batches : static_cast<int>(plan.stages.size());
    o.prefix_cache = s.prefix_cache;
    o.priority = s.priority;
    return o;
}

// Rank 0 (or the one process): serve until stopped.
void serve(const Settings& s, Frontend& front, Driver& driver, const ModelFiles& files, const Plan& plan,
           const std::function<RankReport()>& mine) {
    ReportSink sink(front.metrics(), plan);
    const ServedModel served = served_model(s, files, driver.model(), plan);
    Scheduler scheduler(driver, *files.tokenizer, scheduler_options(s, plan, served.context), front.metrics());
    scheduler.report = [&] { sink.take(driver.gather_reports(encode_report(mine()))); };
    scheduler.report();
    // whatever happens, nothing reaches the scheduler once it is gone
    struct Detach {
        Frontend& f;
        ~Detach() {
            f.api().detach();
            f.serving(nullptr);
        }
    } detach{front};
    front.api().ready(served, scheduler, [&sink] { return sink.plan_json(); });
    front.serving(&scheduler);
    std::fprintf(stderr, "tpserve serve: ready: model '%s', %s, context %lld, batch %lld, KV %lld tokens\n"
                         "  try: curl http://127.0.0.1:%u/v1/completions -H 'Content-Type: application/json' "
                         "-d '{\"model\": \"%s\", \"prompt\": \"Hello\", \"max_tokens\": 16}'\n",
                 served.name.c_str(), plan.shape.c_str(), static_cast<long long>(served.context),
                 static_cast<long long>(plan.serving.max_batch), static_cast<long long>(driver.model().kv_capacity_tokens()),
                 static_cast<unsigned>(front.port()), served.name.c_str());
    try {
        scheduler.run();
    } catch (...) {
        // every request was answered with a 500: let those answers out, then report
        front.api().stopping();
        front.drain();
        front.shutdown();
        throw;
    }
    front.drain();
    front.shutdown();
    std::fprintf(stderr, "tpserve serve: stopped\n");
}

int run_single(const Settings& s) {
    Frontend front(s);
    const ModelFiles files = open_model(s.model_path, s.format);
    if (s.model_sampling) (void)files.sampling_defaults.over({});  // refused before the weights load
    const Plan plan = one_process_plan(s.plan_file, files.desc,
                                       [&] { return plan_request(s, files.desc, 1); });
    const ParallelMapping map(plan, 1, 0);  // a plan for more ranks needs mpirun: this says so
    auto backend = s.backend.cuda ? make_cuda_backend(s.backend.device) : make_cpu_backend(s.threads);
    check_backend_computes(files.desc, *backend);  // (before the weights load)
    LlamaModel model(files.desc, load_llama_weights(files.weights, files.desc, {}), *backend, model_options_for(plan));
    model.weights().touch();
    if (front.stop_asked()) return kExitOk;
    Driver driver(model, nullptr, nullptr);
    serve(s, front, driver, files, plan, [&] { return own_report(model, 0, 0, {}); });
    return kExitOk;
}

int run_sharded(const Settings& s) {
    TPS_CHECK_AS(UsageError, s.backend.device == 0,
                 "--device is for one process; under mpirun each rank takes its host's GPUs in rank order");
    MpiWorld& mpi = mpi_world();
    mpi.set_deadline(s.deadline);
    const int rank = mpi.rank();
    std::optional<Frontend> front;
    if (rank == 0) front.emplace(s);  // up before the model loads
    else MpiWorld::defer_stop_signals();

    ShardRequest req;
    req.model_path = s.model_path;
    req.plan_file = s.plan_file;
    req.format = s.format;
    req.make_request = [&](const ModelDesc& m, int world_size) {
        return plan_request(s, m, world_size);
    };
    req.cuda = s.backend.cuda;
    req.threads = s.threads;
    req.startup_deadline = std::min(86400.0, std::max(600.0, 10 * s.deadline));
    const std::unique_ptr<Shard> shard = load_shard(mpi, req);
    // rank 0 takes them; a bad one ends every rank, not only the one that serves
    agree(*shard->world, "take the model's sampling defaults", [&] {
        if (rank == 0 && s.model_sampling) (void)shard->files.sampling_defaults.over({});
    }, s.deadline);
    shard->reset_comm_stats();
    const auto mine = [&] { return own_report(*shard); };
    if (s.verbose) {
        std::fputs(memory_report(shard->map->describe(), *shard->model, &shard->plan.per_rank.at(static_cast<size_t>(rank)).bytes, "")
                       .c_str(),
                   stderr);
    }
    if (rank == 0) {
        Driver driver(*shard->model, &*shard->links, shard->control.get());
        serve(s, *front, driver, shard->files, shard->plan, mine);
        driver.shutdown();
    } else {
        run_worker(*shard->model, *shard->links, *shard->control, [&] { return encode_report(mine()); });
    }
    shard->world->flush_posted("the last messages to rank 0");
    shard->world->barrier("the end of the run");
    return kExitOk;
}

}  // namespace

int run_serve(int argc, char** argv) {
    cxxopts::Options options("tpserve serve",
                             "Serve a model over HTTP with the OpenAI API (docs/api.md); under mpirun -np N, split "
                             "across N ranks as a plan says, rank 0 serving.");
    options.set_width(100);
    // clang-format off
    options.add_options()
        ("m,model", "HF model directory or .gguf file", cxxopts::value<std::string>())
        ("host", "address to listen on", cxxopts::value<std::string>()->default_value("127.0.0.1"))
        ("port", "port to listen on (0: a free one, printed)", cxxopts::value<std::string>()->default_value("8000"))
        ("served-model-name", "the name clients use (default: the model's folder or file name); several, comma-separated: the first is the model's, the others more names for it (as vLLM's)", cxxopts::value<std::string>()->default_value(""))
        ("max-batch", "most sequences in the running batch", cxxopts::value<std::string>()->default_value("16"))
        ("max-context", "most tokens per sequence (default: the model's context, at most 4096)", cxxopts::value<std::string>()->default_value("0"))
        ("prefill-chunk", "most tokens one step carries (decodes and prompt chunks)", cxxopts::value<std::string>()->default_value("256"))
        ("max-queue", "most choices waiting for a place; when none is left, a request gets 429", cxxopts::value<std::string>()->default_value("64"))
        ("request-timeout", "seconds from a request's arrival to its last token", cxxopts::value<std::string>()->default_value("600"))
        ("max-body-bytes", "largest request body; larger gets 413", cxxopts::value<std::string>()->default_value("1048576"))
        ("http-threads", "threads for the HTTP connections", cxxopts::value<std::string>()->default_value("2"))
        ("generation-config", "auto: sampling fields a request leaves out take the model's generation_config.json values (as vLLM); none: OpenAI's defaults", cxxopts::value<std::string>()->default_value("auto"))
        ("prefix-cache", "on: finished requests' KV stays until its blocks are needed, and a prompt that begins with the same 16-token blocks reuses them instead of prefilling them; off: freed at once", cxxopts::value<std::string>()->default_value("on"))
        ("scheduling-policy", "fcfs: requests are served in arrival order; priority: by each request's 'priority' (lower first, then arrival), and a full cache preempts the least urgent running sequence (as vLLM's)", cxxopts::value<std::string>()->default_value("fcfs"))
        ("responses-store-mib", "memory on rank 0 for the Responses API's stored responses (GET /v1/responses/{id}, previous_response_id); the least recently used go first; 0: none are stored", cxxopts::value<std::string>()->default_value("64"))
        ("api-key", "clients must send 'Authorization: Bearer KEY' (all but the chat page, /health and /metrics); default: $TPSERVE_API_KEY, else none", cxxopts::value<std::string>())
        ("reasoning-parser", "how a reasoning model's chat output is read: deepseek_r1 or qwen3 (its <think> ... </think> as reasoning_content, the rest as content), none (all content), or auto (deepseek_r1 when the chat template writes </think>)", cxxopts::value<std::string>()->default_value("auto"))
        ("tool-call-parser", "how chat output is read for tool calls when a request offers tools: hermes (Qwen2.5), llama3_json (Llama 3.1/3.2), mistral (Mistral v0.3+), none (text), or auto (from the chat template)", cxxopts::value<std::string>()->default_value("auto"))
        ("micro-batches", "steps in flight at once (0 = one per pipeline stage; 1 turns pipelining off, to measure it)", cxxopts::value<std::string>()->default_value("0"))
        ("log-requests", "print a line on stderr for each request answered: client, method, path, status, time, and a generation's tokens, first output and finish")
        ("allowed-origins", "origins whose web pages may call the API from a browser (CORS), comma-separated, as vLLM's: * for any, an empty string for none (no CORS headers)", cxxopts::value<std::string>()->default_value("*"))
        ("allowed-methods", "methods a browser's preflight may ask for (* for any)", cxxopts::value<std::string>()->default_value("*"))
        ("allowed-headers", "headers a browser's preflight may ask to send (* for any)", cxxopts::value<std::string>()->default_value("*"))
        ("allow-credentials", "cross-origin requests may carry credentials (cookies, HTTP authentication): answers name the origin and say Access-Control-Allow-Credentials: true")
        ("log-stats-interval", "seconds between the lines of throughput and load printed on stderr while there is work (0: none)", cxxopts::value<std::string>()->default_value("10"))
        ("v,verbose", "print each rank's memory beside the plan's prediction")
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
    return run_single(s);
}

}  // namespace tps::cli
