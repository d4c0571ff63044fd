// Fuzzing the request path (run under ASan + UBSan by the sanitizer build): mutated, truncated and
// hostile bodies through the parsers (the Responses and Messages APIs' too), and hostile bytes through a live HTTP server. The only
// acceptable outcomes are a parsed request or an ApiError; the server must answer or close, and
// still answer a good request afterwards.
#include "serve_test_support.h"

#include "tpserve/serve/api.h"
#include "tpserve/serve/http_server.h"
#include "tpserve/serve/messages_api.h"
#include "tpserve/serve/responses_api.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <random>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>

namespace tps::serve {
namespace {

const std::vector<std::string> kSeeds = {
    R"({"model":"smollm2","prompt":"Hello world","max_tokens":7,"temperature":0.5,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true},"logprobs":2})",
    R"({"prompt":[1,2,3,4],"top_k":5,"top_p":0.5,"seed":12345678901234,"ignore_eos":true})",
    R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"logprobs":true,"top_logprobs":3,"max_completion_tokens":5})",
    R"({"messages":[{"role":"user","content":"héllo 世界 🙂"},{"role":"assistant","content":"ok"},{"role":"user","content":"again"}],"tools":[{"type":"function","function":{"name":"f"}}]})",
    R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object","properties":{"a":{"type":"array","items":{"$ref":"#/$defs/b"},"maxItems":3},"c":{"type":"integer","minimum":-5,"exclusiveMaximum":100},"d":{"type":"string","pattern":"^[a-z]{2,5}(\\d|_)?$","maxLength":9}},"required":["a"],"$defs":{"b":{"anyOf":[{"enum":["x",1,null]},{"type":"string","format":"date"}]}}}}}})",
    R"({"prompt":"a","guided_regex":"(ab|c[^d-f]*){1,3}\\.[\\w\\s]+?é$","n":2})",
    R"({"prompt":"a","guided_choice":["yes","no","日本"],"structured_outputs":null})",
    R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],"tool_choice":{"type":"function","function":{"name":"f"}}})",
    // the Responses API's
    R"({"model":"smollm2","input":"Hello","instructions":"Be brief.","max_output_tokens":9,"stream":true,"metadata":{"k":"v"},"store":false})",
    R"({"input":[{"role":"developer","content":"x"},{"type":"message","role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"function_call","call_id":"c1","name":"f","arguments":"{\"q\":1}"},{"type":"function_call_output","call_id":"c1","output":"ok"},{"type":"reasoning","id":"rs","summary":[]}],"tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":"auto","parallel_tool_calls":false})",
    // Anthropic's
    R"({"model":"smollm2","max_tokens":9,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"h","signature":""},{"type":"tool_use","id":"t1","name":"f","input":{"q":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"ok"}]},{"type":"text","text":"go"}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto"},"stop_sequences":["x"],"thinking":{"type":"enabled","budget_tokens":100}})",
    R"({"previous_response_id":"resp_a","input":"more","text":{"format":{"type":"json_schema","name":"a","schema":{"type":"object","properties":{"n":{"enum":[1,2]}}}}},"reasoning":{"effort":"low"}})",
};

const std::vector<std::string> kHostile = {
    "1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "NaN", "Infinity", "0.0000001", "null",
    "true", "\"\\ud800\"", "\"\\u0000\"", "[[[[[[[[", "{\"a\":", "\xff\xfe", "\xc0\x80", "\xed\xa0\x80", "\"\xf4\x90\x80\x80\"",
};

std::string mutate(std::string s, std::mt19937_64& rng) {
    auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < edits; ++i) {
        switch (rng() % 7) {
            case 0:  // flip a byte
                if (!s.empty()) s[pick(s.size())] = static_cast<char>(rng());
                break;
            case 1:  // truncate
                s.resize(pick(s.size() + 1));
                break;
            case 2:  // delete a range
                if (!s.empty()) {
                    const size_t at = pick(s.size());
                    s.erase(at, pick(s.size() - at + 1));
                }
                break;
            case 3:  // insert random bytes (invalid UTF-8 likely)
                s.insert(pick(s.size() + 1), std::string(1 + pick(8), static_cast<char>(rng())));
                break;
            case 4:  // a hostile token somewhere
                s.insert(pick(s.size() + 1), kHostile[pick(kHostile.size())]);
                break;
            case 5:  // replace a number with a hostile one
                if (const size_t at = s.find_first_of("0123456789", pick(s.size())); at != std::string::npos) {
                    s.replace(at, 1, kHostile[pick(4)]);
                }
                break;
            default:  // duplicate a range
                if (!s.empty()) {
                    const size_t at = pick(s.size());
                    s.insert(pick(s.size()), s.substr(at, pick(64)));
                }
                break;
        }
    }
    return s;
}

TEST(Fuzz, RequestParsersOnlyAcceptOrRefuse) {
    const ServedModel m = test::served();
    ResponseStore store(1 << 20);
    store.put("resp_a", {nlohmann::ordered_json::object(),
                         nlohmann::ordered_json::parse(R"([{"role":"user","content":"Hi"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Yo"}]}])")});
    std::mt19937_64 rng(20261127);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 4000; ++i) {
        const std::string body = mutate(kSeeds[static_cast<size_t>(i) % kSeeds.size()], rng);
        for (int endpoint = 0; endpoint < 5; ++endpoint) {
            try {
                if (endpoint == 0) parse_completion_request(body, m);
                else if (endpoint == 1) parse_chat_request(body, m);
                else if (endpoint == 2) parse_tokenize_request(body, m);
                else if (endpoint == 3) parse_responses_request(body, m, &store);
                else parse_messages_request(body, m);
                ++accepted;
            } catch (const ApiError& e) {
                ++refused;
                ASSERT_TRUE(e.status() == 400 || e.status() == 404) << e.status() << " for " << body;
                ASSERT_FALSE(std::string(e.what()).empty());
                ASSERT_TRUE(nlohmann::json::accept(e.body())) << e.body();
            } catch (const std::exception& e) {
                FAIL() << "a " << typeid(e).name() << " escaped: " << e.what() << "\nbody: " << body;
            }
        }
    }
    EXPECT_GT(accepted, 100);  // the mutations are not all fatal: the accepting paths were fuzzed too
    EXPECT_GT(refused, 1000);
}

// A live server (still "loading": the HTTP layer alone) on a free loopback port.
class LiveServer {
public:
    LiveServer() : metrics_(registry_), api_(metrics_), http_(io_, api_, HttpLimits{4096, 16 << 10, 5}) {
        port_ = http_.listen("127.0.0.1", 0);
        http_.start();
        thread_ = std::thread([this] { io_.run(); });
    }
    ~LiveServer() {
        http_.stop_accepting();
        work_.reset();
        io_.stop();
        thread_.join();
    }
    // Sends `bytes`, half-closes, returns whatever came back before the server closed or 5 s passed.
    std::string exchange(const std::string& bytes, bool half_close = true) const {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        timeval tv{5, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port_);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::string out;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
            size_t sent = 0;
            while (sent < bytes.size()) {
                const auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
                if (n <= 0) break;
                sent += static_cast<size_t>(n);
            }
            if (half_close) ::shutdown(fd, SHUT_WR);
            char buf[4096];
            for (;;) {
                const auto n = ::recv(fd, buf, sizeof buf, 0);
                if (n <= 0) break;
                out.append(buf, static_cast<size_t>(n));
            }
        }
        ::close(fd);
        return out;
    }

private:
    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ = boost::asio::make_work_guard(io_);
    MetricsRegistry registry_;
    ServeMetrics metrics_;
    Api api_;
    HttpServer http_;
    uint16_t port_ = 0;
    std::thread thread_;
};

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

TEST(Fuzz, TheHttpServerAnswersOrClosesAndKeepsServing) {
    const LiveServer server;
    const std::string health = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(status_line(server.exchange(health)), "HTTP/1.1 503 Service Unavailable");  // loading

    // named hostile requests and what they must get
    const std::string big_header = "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
    EXPECT_EQ(status_line(server.exchange(big_header)), "HTTP/1.1 431 Request Header Fields Too Large");
    const std::string big_body = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(5000, 'x');
    EXPECT_EQ(status_line(server.exchange(big_body)), "HTTP/1.1 413 Payload Too Large");
    EXPECT_EQ(status_line(server.exchange("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")), "HTTP/1.1 404 Not Found");
    const std::string wrong_method = server.exchange("GET /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(status_line(wrong_method), "HTTP/1.1 405 Method Not Allowed");
    EXPECT_NE(wrong_method.find("Allow: POST"), std::string::npos);
    EXPECT_EQ(status_line(server.exchange("BLAH\r\n\r\n")), "HTTP/1.1 400 Bad Request");
    EXPECT_EQ(status_line(server.exchange("GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n")), "HTTP/1.1 400 Bad Request");
    EXPECT_EQ(status_line(server.exchange("POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")),
              "HTTP/1.1 400 Bad Request");
    // a keep-alive connection answers several requests in order
    const std::string two = server.exchange("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(two.find("503"), std::string::npos);
    EXPECT_NE(two.find("tpserve_requests_running"), std::string::npos);

    // random garbage, mutated requests
    std::mt19937_64 rng(7);
    const std::string good = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"prompt\":\"hello!\"}";
    for (int i = 0; i < 300; ++i) {
        std::string bytes = i % 3 == 0 ? std::string(1 + rng() % 512, '\0') : mutate(good, rng);
        if (i % 3 == 0) {
            for (auto& c : bytes) c = static_cast<char>(rng());
        }
        const std::string reply = server.exchange(bytes);
        if (!reply.empty()) {
            ASSERT_EQ(reply.rfind("HTTP/1.", 0), 0u) << "reply: " << reply.substr(0, 200);
        }
    }
    // still serving
    EXPECT_EQ(status_line(server.exchange(health)), "HTTP/1.1 503 Service Unavailable");
}

}  // namespace
}  // namespace tps::serve
