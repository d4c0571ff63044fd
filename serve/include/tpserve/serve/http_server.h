// The HTTP/1.1 front end on Boost.Beast: an acceptor and one session per connection (keep-alive),
// each on its own strand. Sessions read a request within limits (413 for a body over the limit,
// 431 for headers over it, 400 for a malformed request), ask the Api for a Reply (a browser's CORS
// preflight is answered here, before any API key is asked for), and write it with the CORS headers;
// a generation is streamed as server-sent events over chunked encoding, or collected and sent
// whole. While a generation runs the session watches its socket, so a client that goes away has
// its job cancelled even when no token is being written. The Asio threads own sockets only.
#pragma once

#include "tpserve/serve/api.h"
#include "tpserve/serve/cors.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace tps::serve {

struct HttpLimits {
    int64_t max_body_bytes = int64_t{1} << 20;
    int64_t max_header_bytes = int64_t{16} << 10;
    double idle_seconds = 120;  // a keep-alive connection with no request for this long is closed
    bool log_requests = false;  // a line on stderr for each request answered (serve_log.h)
    CorsPolicy cors = {};       // the headers of cross-origin answers, and preflights (cors.h)
};

class HttpServer {
public:
    HttpServer(boost::asio::io_context& io, Api& api, HttpLimits limits);
    ~HttpServer();

    // Binds and listens; returns the port (the chosen one for port 0). Errors: tps::UsageError
    // naming the address.
    uint16_t listen(const std::string& host, uint16_t port);
    // Accepts connections on the io_context's threads until stop_accepting().
    void start();
    void stop_accepting();
    // Sessions with a generation still being written.
    int64_t active_generations() const noexcept { return active_->load(); }

private:
    void accept();

    boost::asio::io_context& io_;
    Api& api_;
    HttpLimits limits_;
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_;  // after an accept error
    std::shared_ptr<std::atomic<int64_t>> active_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace tps::serve
