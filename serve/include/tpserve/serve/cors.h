// Cross-origin requests (CORS), so a web page served elsewhere can call the API from a browser, as
// vLLM's --allowed-origins (Starlette's CORSMiddleware) and llama.cpp's server allow: the headers
// each answer carries for a request that names its Origin, and the answer to a browser's preflight
// (OPTIONS with Access-Control-Request-Method), which needs no API key.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::serve {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct CorsPolicy {
    // Origins ("https://app.example"; "*": any); none: cross-origin requests get no CORS headers,
    // and a preflight is an OPTIONS request like any other (405).
    std::vector<std::string> origins = {"*"};
    std::vector<std::string> methods = {"*"};  // a preflight may ask for these ("*": any)
    std::vector<std::string> headers = {"*"};  // and send these headers ("*": any)
    bool credentials = false;                  // Access-Control-Allow-Credentials: true

    bool on() const { return !origins.empty(); }
    bool allows_origin(std::string_view origin) const;
};

// The headers an answer to a request from `origin` (its Origin header; empty: none) carries.
HeaderList cors_headers(const CorsPolicy& policy, std::string_view origin);

struct Preflight {
    int status = 200;  // 400 when the origin, method or headers asked for are not allowed
    HeaderList headers;  // what it allows (the origin's own headers: cors_headers, as on any answer)
    std::string body;    // "OK", or what was not allowed
};

// The answer to a preflight from `origin` asking for `method` (Access-Control-Request-Method)
// and `request_headers` (Access-Control-Request-Headers, comma-separated).
Preflight cors_preflight(const CorsPolicy& policy, std::string_view origin, std::string_view method, std::string_view request_headers);

// Whether a request is a preflight: OPTIONS with an Origin and an Access-Control-Request-Method.
inline bool is_preflight(std::string_view method, std::string_view origin, std::string_view request_method) {
    return method == "OPTIONS" && !origin.empty() && !request_method.empty();
}

}  // namespace tps::serve
