// CORS (cors.h), as Starlette's CORSMiddleware answers, which vLLM's server runs: the same headers,
// the same refusals.
#include "tpserve/serve/cors.h"

#include "tpserve/common/strings.h"

#include <algorithm>

namespace tps::serve {
namespace {

constexpr std::string_view kAllMethods = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";
// headers a browser may always send (the CORS-safelisted ones)
constexpr std::string_view kSafeHeaders[] = {"accept", "accept-language", "content-language", "content-type"};

bool any(const std::vector<std::string>& list) { return std::find(list.begin(), list.end(), "*") != list.end(); }

std::string joined(const std::vector<std::string>& list) {
    std::string out;
    for (const std::string& s : list) {
        if (!out.empty()) out += ", ";
        out += s;
    }
    return out;
}

}  // namespace

bool CorsPolicy::allows_origin(std::string_view origin) const {
    return any(origins) || std::find(origins.begin(), origins.end(), origin) != origins.end();
}

HeaderList cors_headers(const CorsPolicy& policy, std::string_view origin) {
    HeaderList out;
    if (!policy.on() || origin.empty() || !policy.allows_origin(origin)) return out;
    if (any(policy.origins) && !policy.credentials) {
        out.emplace_back("Access-Control-Allow-Origin", "*");
    } else {
        // a named origin (a credentialed answer may not say "*"), and caches keep answers apart by it
        out.emplace_back("Access-Control-Allow-Origin", std::string(origin));
        out.emplace_back("Vary", "Origin");
    }
    if (policy.credentials) out.emplace_back("Access-Control-Allow-Credentials", "true");
    return out;
}

Preflight cors_preflight(const CorsPolicy& policy, std::string_view origin, std::string_view method, std::string_view request_headers) {
    Preflight p;
    std::vector<std::string> refused;
    if (!policy.allows_origin(origin)) refused.emplace_back("origin");
    if (!any(policy.methods) && std::find(policy.methods.begin(), policy.methods.end(), method) == policy.methods.end()) {
        refused.emplace_back("method");
    }
    std::vector<std::string> asked;
    for (const std::string& h : split(request_headers, ',')) {
        if (const std::string_view t = trim(h); !t.empty()) asked.push_back(to_lower(t));
    }
    if (!any(policy.headers)) {
        std::vector<std::string> allowed(std::begin(kSafeHeaders), std::end(kSafeHeaders));
        for (const std::string& h : policy.headers) allowed.push_back(to_lower(h));
        const bool all_allowed =
            std::all_of(asked.begin(), asked.end(), [&](const std::string& h) { return std::find(allowed.begin(), allowed.end(), h) != allowed.end(); });
        if (!all_allowed) refused.emplace_back("headers");
    }
    p.headers.emplace_back("Access-Control-Allow-Methods", any(policy.methods) ? std::string(kAllMethods) : joined(policy.methods));
    if (!any(policy.headers)) {
        p.headers.emplace_back("Access-Control-Allow-Headers", joined(policy.headers));
    } else if (!asked.empty()) {
        p.headers.emplace_back("Access-Control-Allow-Headers", std::string(request_headers));  // (any: what was asked)
    }
    p.headers.emplace_back("Access-Control-Max-Age", "600");
    if (!refused.empty()) {
        p.status = 400;
        p.body = "Disallowed CORS " + joined(refused);
        return p;
    }
    p.body = "OK";
    return p;
}

}  // namespace tps::serve
