// The Beast sessions and the acceptor (http_server.h).
#include "tpserve/serve/http_server.h"

#include "tpserve/common/check.h"
#include "tpserve/serve/serve_log.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <optional>
#include <sys/socket.h>

namespace tps::serve {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket&& socket, Api& api, const HttpLimits& limits, std::shared_ptr<std::atomic<int64_t>> active)
        : stream_(std::move(socket)), api_(api), limits_(limits), active_(std::move(active)) {}

    ~Session() {
        if (unfinished()) api_.cancelled(jobs_);
        uncount();
    }

    void run() { net::dispatch(stream_.get_executor(), beast::bind_front_handler(&Session::read, shared_from_this())); }

private:
    std::chrono::milliseconds idle() const { return std::chrono::milliseconds(static_cast<int64_t>(limits_.idle_seconds * 1000)); }

    void read() {
        parser_.emplace();
        parser_->body_limit(static_cast<uint64_t>(limits_.max_body_bytes));
        parser_->header_limit(static_cast<uint32_t>(limits_.max_header_bytes));
        stream_.expires_after(idle());
        http::async_read_header(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_header, shared_from_this()));
    }

    // A client that asks before sending its body (curl does for larger bodies) is told to go on.
    void on_header(beast::error_code ec, size_t) {
        if (ec) return on_read(ec, 0);
        if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
            auto go_on = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
            http::async_write(stream_, *go_on, [self = shared_from_this(), go_on](beast::error_code wec, size_t) {
                if (wec) return self->close();
                self->read_body();
            });
            return;
        }
        read_body();
    }

    void read_body() {
        http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
    }

    void on_read(beast::error_code ec, size_t) {
        if (limits_.log_requests) begin_record();
        origin_ = std::string(parser_->get()[http::field::origin]);  // (its answer carries the CORS headers)
        if (ec == http::error::body_limit) {
            keep_alive_ = false;
            const auto target = parser_->get().target();
            return send(Api::error_at(std::string_view(target.data(), target.size()),
                                      ApiError(413, "invalid_request_error",
                                               fmt::format("the body is over the limit of {} bytes", limits_.max_body_bytes))));
        }
        if (ec == http::error::header_limit) {
            keep_alive_ = false;
            return send(Reply::error_of(ApiError(431, "invalid_request_error",
                                              fmt::format("the request headers are over the limit of {} bytes",
                                                          limits_.max_header_bytes))));
        }
        if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted) {
            return close();
        }
        if (ec) {
            // a malformed request gets an answer; a connection that broke does not
            if (ec.category() != http::make_error_code(http::error::bad_target).category()) return close();
            keep_alive_ = false;
            return send(Reply::error_of(ApiError::invalid(fmt::format("malformed HTTP request: {}", ec.message()))));
        }
        const auto& req = parser_->get();
        keep_alive_ = req.keep_alive();
        version_ = req.version();
        const auto asked_method = req[http::field::access_control_request_method];
        if (limits_.cors.on() && is_preflight(std::string_view(req.method_string().data(), req.method_string().size()), origin_,
                                              std::string_view(asked_method.data(), asked_method.size()))) {
            const auto asked_headers = req[http::field::access_control_request_headers];
            Preflight p = cors_preflight(limits_.cors, origin_, std::string_view(asked_method.data(), asked_method.size()),
                                         std::string_view(asked_headers.data(), asked_headers.size()));
            Reply r;
            r.status = p.status;
            r.content_type = "text/plain; charset=utf-8";
            r.body = std::move(p.body);
            r.headers = std::move(p.headers);
            return send(std::move(r));
        }
        // (Anthropic's clients send the key as x-api-key)
        const auto bearer = req[http::field::authorization];
        const auto x_api_key = req["x-api-key"];
        const std::string auth = !bearer.empty() || x_api_key.empty() ? std::string(bearer) : "Bearer " + std::string(x_api_key);
        Reply r = api_.handle(std::string_view(req.method_string().data(), req.method_string().size()),
                              std::string_view(req.target().data(), req.target().size()), req.body(), auth);
        if (!r.jobs.empty()) return start(std::move(r));
        send(std::move(r));
    }

    void send(Reply r) {
        log_answer(r.status);
        auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status),
                                                                         version_ ? version_ : 11);
        res->set(http::field::server, "tpserve");
        res->set(http::field::content_type, r.content_type);
        for (const auto& [name, value] : r.headers) res->set(name, value);
        for (const auto& [name, value] : cors_headers(limits_.cors, origin_)) res->set(name, value);
        res->keep_alive(keep_alive_);
        res->body() = std::move(r.body);
        res->prepare_payload();
        stream_.expires_after(idle());  // a client that does not read its answer is not waited for
        http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
            self->uncount();  // a generation's answer is out (for the orderly stop's drain)
            if (ec) return self->close();
            if (!self->keep_alive_ || res->need_eof()) return self->linger_close();
            self->read();
        });
    }

    // A generation (one job per choice): streamed as server-sent events, or collected and sent
    // whole once every choice is done.
    void start(Reply r) {
        jobs_ = std::move(r.jobs);
        writer_ = std::move(r.writer);
        ended_.assign(jobs_.size(), false);
        left_ = jobs_.size();
        std::weak_ptr<Session> weak = weak_from_this();
        auto exec = stream_.get_executor();
        for (const auto& job : jobs_) {
            job->set_notify([weak, exec] {
                net::post(exec, [weak] {
                    if (auto s = weak.lock()) s->pump();
                });
            });
        }
        if (auto refused = api_.submit(jobs_)) {
            for (const auto& job : jobs_) job->set_notify(nullptr);
            if (refused->error) refused->body = writer_->error_body(*refused->error);
            jobs_.clear();
            writer_.reset();
            return send(std::move(*refused));
        }
        if (record_) {
            record_->generation = true;
            record_->stream = streaming();
        }
        ++*active_;
        counted_ = true;
        self_ = shared_from_this();  // alive while the generation runs, whoever else holds it
        stream_.expires_never();
        watch();
        if (!streaming()) return pump();
        chunked_ = version_ >= 11;
        if (!chunked_) keep_alive_ = false;  // HTTP/1.0: the end of the stream is the end of the connection
        header_ = std::make_shared<http::response<http::empty_body>>(http::status::ok, version_);
        header_->set(http::field::server, "tpserve");
        header_->set(http::field::content_type, "text/event-stream");
        header_->set(http::field::cache_control, "no-cache");
        header_->set("X-Accel-Buffering", "no");
        for (const auto& [name, value] : cors_headers(limits_.cors, origin_)) header_->set(name, value);
        header_->keep_alive(keep_alive_);
        header_->chunked(chunked_);
        serializer_ = std::make_shared<http::response_serializer<http::empty_body>>(*header_);
        out_ = writer_->stream_start();  // first in line: pieces may arrive while the header is written
        writing_ = true;
        stream_.expires_after(idle());
        http::async_write_header(stream_, *serializer_, [self = shared_from_this()](beast::error_code ec, size_t) {
            self->writing_ = false;
            self->stream_.expires_never();
            if (ec) return self->abandon();
            self->pump();
        });
    }

    bool streaming() const { return jobs_.front()->request().stream; }
    // A job of the generation has not pushed its last piece.
    bool unfinished() const {
        return std::any_of(jobs_.begin(), jobs_.end(), [](const auto& j) { return !j->finished(); });
    }
    // Each prompt once (not once per choice), every choice's output.
    Usage usage() const {
        Usage u;
        for (const auto& j : jobs_) {
            if (j->request().counts_prompt()) {
                u.prompt += j->prompt_tokens.load();
                u.cached += j->cached_tokens.load();
            }
            u.completion += j->completion_tokens.load();
        }
        return u;
    }

    // Takes what the engine produced and writes it (one write at a time). A choice that fails
    // fails the request: the others are cancelled.
    void pump() {
        if (jobs_.empty()) return;
        const bool streaming = this->streaming();
        for (size_t i = 0; i < jobs_.size() && !done_; ++i) {
            const int index = jobs_[i]->request().index;
            for (auto& d : jobs_[i]->take()) {
                if (done_ || ended_[i]) break;
                if (d.error) {
                    api_.cancelled(jobs_);
                    note_finish("error");
                    if (!streaming) {
                        const ApiError error = *d.error;
                        Reply r = Reply::error_of(error);
                        r.body = writer_->error_body(error);
                        note_usage();
                        finish_job();
                        return send(std::move(r));
                    }
                    out_ += writer_->stream_error(*d.error);
                    done_ = true;
                    break;
                }
                if (record_ && record_->first_output < 0 && (!d.text.empty() || !d.tokens.empty())) {
                    record_->first_output = seconds_since(started_);
                }
                if (streaming) out_ += writer_->stream_piece(index, d);
                else writer_->add(index, d);
                if (d.last()) {
                    note_finish(d.finish_reason);
                    ended_[i] = true;
                    --left_;
                }
            }
        }
        if (!done_ && left_ == 0) {
            if (!streaming) {
                Reply whole;
                whole.body = writer_->whole(usage());
                note_usage();
                finish_job();
                return send(std::move(whole));
            }
            out_ += writer_->stream_end(usage());
            done_ = true;
        }
        if (!streaming || writing_) return;
        if (!out_.empty()) {
            auto text = std::make_shared<std::string>(std::move(out_));
            out_.clear();
            writing_ = true;
            stream_.expires_after(idle());  // a client that stops reading is let go, not held for ever
            auto after = [self = shared_from_this(), text](beast::error_code ec, size_t) {
                self->writing_ = false;
                self->stream_.expires_never();
                if (ec) return self->abandon();
                self->pump();
            };
            if (chunked_) net::async_write(stream_, http::make_chunk(net::buffer(*text)), std::move(after));
            else net::async_write(stream_, net::buffer(*text), std::move(after));
            return;
        }
        if (!done_) return;
        auto self = shared_from_this();  // finish_job lets go of the session's hold on itself
        note_usage();
        log_answer(200);
        finish_job();
        if (!chunked_) {
            uncount();
            return close();
        }
        writing_ = true;
        stream_.expires_after(idle());
        auto last = std::make_shared<decltype(http::make_chunk_last())>(http::make_chunk_last());
        net::async_write(stream_, *last, [self, last](beast::error_code ec, size_t) {
            self->writing_ = false;
            self->uncount();
            if (ec || !self->keep_alive_) return self->close();
            self->read();
        });
    }

    // Notices a client that goes away while its generation runs (no write may be due for a while).
    void watch() {
        std::shared_ptr<Job> first = jobs_.front();
        stream_.socket().async_wait(
            tcp::socket::wait_read,
            net::bind_executor(stream_.get_executor(), [self = shared_from_this(), first](beast::error_code ec) {
                // that generation is over
                if (self->jobs_.empty() || first != self->jobs_.front() || !self->unfinished()) return;
                if (!ec) {
                    char c = 0;
                    const auto n = ::recv(self->stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
                    // bytes: the client's next request (read once this one is answered), so stop
                    // watching; the session holds itself until the answer is out
                    if (n > 0) return;
                    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return self->watch();
                }
                // the client closed (or half-closed: an HTTP client waiting for its answer does not)
                self->abandon();
            }));
    }

    // The client went away: cancel the jobs (their KV blocks are freed at the next step) and close.
    void abandon() {
        auto self = shared_from_this();
        if (record_ && !jobs_.empty()) {
            note_usage();
            note_finish("gone");
            log_answer(streaming() ? 200 : 499);  // (499: the client went away before its answer, as nginx logs it)
        }
        if (unfinished()) api_.cancelled(jobs_);
        finish_job();
        uncount();
        close();
    }

    // The generation's part is over (its answer may still be being written). The caller holds a
    // reference: this lets go of the session's hold on itself.
    void finish_job() {
        for (const auto& job : jobs_) job->set_notify(nullptr);
        jobs_.clear();
        ended_.clear();
        left_ = 0;
        writer_.reset();
        done_ = false;
        out_.clear();
        self_.reset();
    }

    void uncount() {
        if (counted_) {
            --*active_;
            counted_ = false;
        }
    }

    // --log-requests: what is known of the request being answered, then its line once answered
    void begin_record() {
        record_.emplace();
        started_ = Clock::now();
        beast::error_code ec;
        const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
        if (!ec) record_->peer = fmt::format("{}:{}", peer.address().to_string(), peer.port());
        const auto& req = parser_->get();
        const auto method = req.method_string();
        const auto target = req.target();
        record_->method = method.empty() ? "-" : std::string(method.data(), method.size());
        const std::string_view path(target.data(), target.size());
        record_->path = path.empty() ? "-" : std::string(path.substr(0, path.find('?')));
    }
    void note_usage() {
        if (record_ && !jobs_.empty()) record_->usage = usage();
    }
    void note_finish(const std::string& reason) {
        if (!record_) return;
        if (!record_->finish.empty()) record_->finish += ',';
        record_->finish += reason;
    }
    void log_answer(int status) {
        if (!record_) return;
        record_->status = status;
        record_->seconds = seconds_since(started_);
        std::fprintf(stderr, "%s\n", request_line(*record_).c_str());
        record_.reset();
    }
    static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

    void close() {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.socket().close(ec);
    }

    // After an answer that ends the connection (413 with the body still coming, 431, 400): stop
    // sending, and read and drop what the client still sends for a moment, so the answer is not
    // lost to a reset from closing with unread bytes.
    void linger_close() {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        stream_.expires_after(std::chrono::seconds(1));
        drain_ = std::make_shared<std::array<char, 4096>>();
        stream_.async_read_some(net::buffer(*drain_), [self = shared_from_this()](beast::error_code rec, size_t) {
            if (rec) return self->close();
            self->drain_more();
        });
    }
    void drain_more() {
        stream_.async_read_some(net::buffer(*drain_), [self = shared_from_this()](beast::error_code rec, size_t) {
            if (rec) return self->close();
            self->drain_more();
        });
    }

    beast::tcp_stream stream_;
    Api& api_;
    const HttpLimits& limits_;
    std::shared_ptr<std::atomic<int64_t>> active_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    bool keep_alive_ = true;
    unsigned version_ = 11;
    std::string origin_;  // the request's Origin header (cross-origin answers carry CORS headers)
    // the generation being answered: a job per choice, which have ended, how many have not
    std::vector<std::shared_ptr<Job>> jobs_;
    std::vector<bool> ended_;
    size_t left_ = 0;
    std::shared_ptr<Session> self_;  // set while a generation runs
    std::shared_ptr<ResponseWriter> writer_;
    std::shared_ptr<http::response<http::empty_body>> header_;
    std::shared_ptr<http::response_serializer<http::empty_body>> serializer_;
    std::string out_;
    std::shared_ptr<std::array<char, 4096>> drain_;  // linger_close's scratch
    bool writing_ = false;
    bool done_ = false;
    bool chunked_ = true;
    bool counted_ = false;
    std::optional<RequestRecord> record_;  // --log-requests: the request being answered
    Clock::time_point started_;
};

}  // namespace

HttpServer::HttpServer(net::io_context& io, Api& api, HttpLimits limits)
    : io_(io), api_(api), limits_(limits), acceptor_(net::make_strand(io)), retry_(acceptor_.get_executor()) {}

HttpServer::~HttpServer() = default;

uint16_t HttpServer::listen(const std::string& host, uint16_t port) {
    beast::error_code ec;
    const auto address = net::ip::make_address(host, ec);
    TPS_CHECK_AS(UsageError, !ec, "--host: '{}' is not an IP address ({})", host, ec.message());
    const tcp::endpoint endpoint(address, port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    TPS_CHECK_AS(UsageError, !ec, "cannot listen on {}:{}: {}", host, port, ec.message());
    return acceptor_.local_endpoint().port();
}

void HttpServer::start() { accept(); }

void HttpServer::accept() {
    acceptor_.async_accept(net::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
        if (!acceptor_.is_open() || ec == net::error::operation_aborted) return;
        if (ec) {
            // out of file descriptors or memory: try again in a moment rather than spin
            retry_.expires_after(std::chrono::milliseconds(100));
            retry_.async_wait([this](beast::error_code wec) {
                if (!wec) accept();
            });
            return;
        }
        {
            // every event goes out at once (Nagle would hold a stream's small writes for the
            // client's delayed acknowledgement, about 40 ms on Linux)
            beast::error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            std::make_shared<Session>(std::move(socket), api_, limits_, active_)->run();
        }
        accept();
    });
}

void HttpServer::stop_accepting() {
    net::post(acceptor_.get_executor(), [this] {
        beast::error_code ec;
        acceptor_.close(ec);
        retry_.cancel();
    });
}

}  // namespace tps::serve
