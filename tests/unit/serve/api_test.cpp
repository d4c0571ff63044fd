// The API key (--api-key): which endpoints need it, what a client without it gets (401 in
// OpenAI's shape, WWW-Authenticate), and the Bearer header's reading.
#include "tpserve/serve/api.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

namespace tps::serve {
namespace {

TEST(ApiKey, BearerHeader) {
    EXPECT_TRUE(bearer_matches("Bearer sk-123", "sk-123"));
    EXPECT_TRUE(bearer_matches("bearer sk-123", "sk-123"));
    EXPECT_TRUE(bearer_matches("BEARER   sk-123 ", "sk-123"));
    EXPECT_FALSE(bearer_matches("Bearer sk-124", "sk-123"));
    EXPECT_FALSE(bearer_matches("Bearer sk-12", "sk-123"));
    EXPECT_FALSE(bearer_matches("Bearer sk-1234", "sk-123"));
    EXPECT_FALSE(bearer_matches("Bearer ", "sk-123"));
    EXPECT_FALSE(bearer_matches("sk-123", "sk-123"));
    EXPECT_FALSE(bearer_matches("Basic sk-123", "sk-123"));
    EXPECT_FALSE(bearer_matches("", "sk-123"));
    EXPECT_FALSE(bearer_matches(std::string("Bearer sk-123\0x", 14), "sk-123"));
}

TEST(ApiKey, EveryEndpointButThePageAndTheProbesNeedsIt) {
    MetricsRegistry registry;
    ServeMetrics metrics(registry);
    Api api(metrics, "sk-secret");
    // (the model is still loading: an endpoint that lets the key through answers 503)
    for (const auto& [method, path] : std::vector<std::pair<const char*, const char*>>{
             {"GET", "/v1/models"}, {"GET", "/v1/plan"}, {"POST", "/v1/completions"}, {"POST", "/v1/chat/completions"},
             {"POST", "/v1/responses"}, {"GET", "/v1/responses/resp_1"}, {"DELETE", "/v1/responses/resp_1"}, {"POST", "/tokenize"}, {"POST", "/detokenize"}}) {
        for (const char* auth : {"", "Bearer sk-wrong"}) {
            const Reply r = api.handle(method, path, "{}", auth);
            EXPECT_EQ(r.status, 401) << path << " " << auth;
            const auto body = nlohmann::json::parse(r.body);
            EXPECT_EQ(body["error"]["code"], "invalid_api_key") << r.body;
            EXPECT_EQ(body["error"]["type"], "invalid_request_error") << r.body;
            EXPECT_NE(std::find(r.headers.begin(), r.headers.end(), std::pair<std::string, std::string>{"WWW-Authenticate", "Bearer"}),
                      r.headers.end());
        }
        EXPECT_EQ(api.handle(method, path, "{}", "Bearer sk-secret").status, 503) << path;
    }
    EXPECT_EQ(api.handle("GET", "/", "", "").status, 200);
    EXPECT_EQ(api.handle("GET", "/health", "", "").status, 503);  // (loading, not 401)
    EXPECT_EQ(api.handle("GET", "/metrics", "", "").status, 200);
    EXPECT_NE(registry.render().find("tpserve_requests_rejected_total{reason=\"unauthorized\"} 18"), std::string::npos)
        << registry.render();
    EXPECT_EQ(api.handle("GET", "/nowhere", "", "").status, 404);  // (an unknown path is no secret)

    Api open(metrics);
    EXPECT_EQ(open.handle("GET", "/v1/models", "", "").status, 503);  // no key: none needed
}

}  // namespace
}  // namespace tps::serve
