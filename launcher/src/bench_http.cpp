#include "bench_http.h"

#include "process.h"

#include "tpserve/common/check.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <csignal>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

namespace tps::cli {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Connects to the server on loopback and sends one request.
void send_request(tcp::socket& socket, uint16_t port, http::verb verb, const std::string& target, std::string body) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    socket.set_option(tcp::no_delay(true));
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(socket, req);
}

// A plain request; throws on a connection error.
std::pair<int, std::string> fetch(uint16_t port, http::verb verb, const std::string& target, const std::string& body = {}) {
    net::io_context io;
    tcp::socket socket(io);
    send_request(socket, port, verb, target, body);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(socket, buffer, res);
    beast::error_code ec;
    socket.shutdown(tcp::socket::shutdown_both, ec);
    return {static_cast<int>(res.result_int()), res.body()};
}

// One streaming completion: when its first piece arrived, and the tokens usage counted.
struct Stream {
    std::optional<Clock::time_point> first;  // the first piece, text or not
    int64_t tokens = 0;
    std::string error;
};

Stream stream_completion(uint16_t port, const std::string& model, const std::vector<int32_t>& prompt, int64_t max_tokens) {
    Stream out;
    try {
        const json body = {{"model", model}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
                           {"ignore_eos", true}, {"stream", true}, {"stream_options", {{"include_usage", true}}}};
        net::io_context io;
        tcp::socket socket(io);
        send_request(socket, port, http::verb::post, "/v1/completions", body.dump());
        beast::flat_buffer buffer;
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        http::read_header(socket, buffer, parser);
        if (parser.get().result_int() != 200) {
            out.error = fmt::format("HTTP {}", parser.get().result_int());
            return out;
        }
        std::string pending;
        char chunk[8192];
        while (!parser.is_done()) {
            parser.get().body().data = chunk;
            parser.get().body().size = sizeof chunk;
            beast::error_code ec;
            http::read(socket, buffer, parser, ec);
            if (ec && ec != http::error::need_buffer) throw beast::system_error(ec);
            const auto now = Clock::now();
            pending.append(chunk, sizeof chunk - parser.get().body().size);
            for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
                const std::string event = pending.substr(0, end);
                pending.erase(0, end + 2);
                if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
                const json j = json::parse(event.substr(6), nullptr, false);
                if (!j.is_object()) continue;
                if (j.contains("error")) out.error = j["error"].value("message", "an error event");
                if (j.contains("usage") && j["usage"].is_object()) out.tokens = j["usage"].value("completion_tokens", int64_t{0});
                if (!out.first && j.contains("choices") && !j["choices"].empty()) out.first = now;
            }
        }
    } catch (const std::exception& e) {
        out.error = e.what();
    }
    return out;
}

std::vector<int32_t> random_prompt(int64_t n, int64_t vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> p;
    for (int64_t i = 0; i < n; ++i) p.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
    return p;
}

// The server's port, from its "listening on http://HOST:PORT" line.
uint16_t wait_for_port(const std::filesystem::path& log, pid_t launcher, double timeout_s) {
    const std::regex line(R"(listening on http://[^:\s]+:(\d+))");
    const auto until = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (Clock::now() < until) {
        std::ifstream in(log);
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::smatch m;
        if (std::regex_search(text, m, line)) return static_cast<uint16_t>(std::stoi(m[1]));
        if (const auto status = wait_exit(launcher, 0)) {
            throw InputError(fmt::format("the server exited ({}) before listening:\n{}", *status, tail_of(log)));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw InputError(fmt::format("the server did not say where it listens within {} s:\n{}", timeout_s, tail_of(log)));
}

}  // namespace

json run_http_bench(const HttpBenchRun& run) {
    std::vector<std::string> argv = run.mpirun;
    const int64_t largest = *std::max_element(run.workload.batches.begin(), run.workload.batches.end());
    argv.insert(argv.end(), {run.tpserve, "serve", "--model", run.model_path, "--plan", run.plan_file.string(), "--port", "0",
                             "--host", "127.0.0.1", "--max-queue", std::to_string(largest), "--threads",
                             std::to_string(run.threads), "--deadline", fmt::format("{}", run.deadline),
                             "--served-model-name", "bench", "--request-timeout", "86400"});
    if (!run.format.empty()) argv.insert(argv.end(), {"--format", run.format});
    if (run.cuda) argv.insert(argv.end(), {"--backend", "cuda"});
    const pid_t launcher = spawn_logged(argv, run.log);
    // a watchdog: a server that stops answering is ended, which ends the clients' waits too
    std::mutex watch_mu;
    std::condition_variable watch_cv;
    bool finished = false;
    std::thread watchdog([&] {
        std::unique_lock lock(watch_mu);
        if (!watch_cv.wait_for(lock, std::chrono::duration<double>(60 * run.deadline), [&] { return finished; })) {
            kill_group(launcher);
        }
    });
    json result;
    std::exception_ptr failure;
    try {
        const uint16_t port = wait_for_port(run.log, launcher, 10 * run.deadline);
        // ready when /health says so (the model loads after the server listens)
        const auto until = Clock::now() + std::chrono::duration<double>(10 * run.deadline);
        for (;;) {
            try {
                if (fetch(port, http::verb::get, "/health").first == 200) break;
            } catch (const std::exception&) {
            }
            TPS_CHECK_AS(InputError, Clock::now() < until && !wait_exit(launcher, 0), "the server did not become ready:\n{}",
                         tail_of(run.log));
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        const json plan = json::parse(fetch(port, http::verb::get, "/v1/plan").second);
        const int64_t vocab = plan.at("model").at("vocab").get<int64_t>();
        const BenchWorkload& w = run.workload;

        stream_completion(port, "bench", random_prompt(w.prompt_tokens, vocab, 1), 2);  // warm-up
        double prefill = 1e30;
        for (int i = 0; i < 3; ++i) {
            const auto t0 = Clock::now();
            const Stream s = stream_completion(port, "bench", random_prompt(w.prompt_tokens, vocab, 2 + static_cast<uint64_t>(i)), 1);
            TPS_CHECK_AS(InputError, s.error.empty() && s.first, "a prefill request failed: {}", s.error);
            prefill = std::min(prefill, seconds(*s.first - t0));
        }
        result["prefill_s"] = prefill;
        result["batches"] = json::array();
        for (const int64_t batch : w.batches) {
            std::vector<Stream> streams(static_cast<size_t>(batch));
            std::vector<std::thread> clients;
            const auto t0 = Clock::now();
            for (int64_t i = 0; i < batch; ++i) {
                clients.emplace_back([&, i] {
                    streams[static_cast<size_t>(i)] = stream_completion(
                        port, "bench", random_prompt(w.prompt_tokens, vocab, 100 + static_cast<uint64_t>(batch * 1000 + i)), w.decode_tokens);
                });
            }
            for (auto& c : clients) c.join();
            const double wall = seconds(Clock::now() - t0);
            for (const auto& s : streams) {
                TPS_CHECK_AS(InputError, s.error.empty() && s.tokens == w.decode_tokens && s.first,
                             "a stream of batch {} failed: {} ({} tokens)", batch, s.error, s.tokens);
            }
            // end to end, as a client sees it: a fast server's pieces can arrive in one read, so
            // the gaps between them say nothing; the level's wall time does
            const double tokens = static_cast<double>(batch * w.decode_tokens);
            result["batches"].push_back({{"batch", batch},
                                         {"tokens_per_s", tokens / wall},
                                         {"time_per_token_s", wall / static_cast<double>(w.decode_tokens)},
                                         {"wall_s", wall},
                                         {"end_to_end", true},
                                         {"ranks", json::array()}});
        }
        result["memory"] = json::array();
        for (const auto& r : plan.at("per_rank")) {
            if (!r.contains("actual")) continue;
            const auto& b = r.at("bytes");
            const auto& a = r.at("actual");
            const int64_t predicted_total = b.at("weights").get<int64_t>() + b.at("kv_cache").get<int64_t>() +
                                            b.at("activations").get<int64_t>() + b.at("runtime").get<int64_t>();
            result["memory"].push_back({{"rank", r.at("rank")},
                                        {"stage", r.at("stage")},
                                        {"actual", {{"weights", a.at("weights")}, {"kv_cache", a.at("kv_cache")},
                                                    {"activations", a.at("activations")}, {"total", a.at("total")}}},
                                        {"predicted", {{"weights", b.at("weights")}, {"kv_cache", b.at("kv_cache")},
                                                       {"activations", b.at("activations")}, {"total", predicted_total}}}});
        }
    } catch (...) {
        failure = std::current_exception();
    }
    // the orderly stop: rank 0 is told, finishes, and shuts the other ranks down
    if (const auto rank0 = rank0_of(launcher)) ::kill(*rank0, SIGTERM);
    auto status = wait_exit(launcher, 2 * run.deadline);
    if (!status) {
        kill_group(launcher);
        status = wait_exit(launcher, 10);
    }
    kill_group(launcher);  // nothing of the server outlives it
    {
        std::lock_guard lock(watch_mu);
        finished = true;
    }
    watch_cv.notify_all();
    watchdog.join();
    if (failure) std::rethrow_exception(failure);
    TPS_CHECK_AS(InputError, status && *status == 0, "the server did not stop in order (exit {}):\n{}", status ? *status : -1,
                 tail_of(run.log));
    return result;
}

}  // namespace tps::cli
