// CORS (cors.h): the headers of cross-origin answers and the answers to preflights, as Starlette's
// CORSMiddleware gives them behind vLLM's --allowed-origins.
#include "tpserve/serve/cors.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tps::serve {
namespace {

std::string header(const HeaderList& h, std::string_view name) {
    const auto it = std::find_if(h.begin(), h.end(), [&](const auto& p) { return p.first == name; });
    return it == h.end() ? std::string("(none)") : it->second;
}

TEST(Cors, AnyOriginByDefault) {
    const CorsPolicy any;
    EXPECT_TRUE(any.on());
    const HeaderList h = cors_headers(any, "https://app.example");
    EXPECT_EQ(header(h, "Access-Control-Allow-Origin"), "*");
    EXPECT_EQ(header(h, "Vary"), "(none)");
    EXPECT_EQ(header(h, "Access-Control-Allow-Credentials"), "(none)");
    EXPECT_TRUE(cors_headers(any, "").empty());  // no Origin: not a cross-origin request
    const Preflight p = cors_preflight(any, "https://app.example", "POST", "authorization, content-type");
    EXPECT_EQ(p.status, 200);
    EXPECT_EQ(p.body, "OK");
    EXPECT_EQ(header(p.headers, "Access-Control-Allow-Methods"), "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT");
    EXPECT_EQ(header(p.headers, "Access-Control-Allow-Headers"), "authorization, content-type");  // (any: those asked)
    EXPECT_EQ(header(p.headers, "Access-Control-Max-Age"), "600");
    EXPECT_EQ(header(cors_preflight(any, "https://a", "GET", "").headers, "Access-Control-Allow-Headers"), "(none)");
}

TEST(Cors, NamedOriginsAreEchoedAndOthersGetNothing) {
    CorsPolicy named;
    named.origins = {"https://app.example", "http://localhost:3000"};
    const HeaderList h = cors_headers(named, "http://localhost:3000");
    EXPECT_EQ(header(h, "Access-Control-Allow-Origin"), "http://localhost:3000");
    EXPECT_EQ(header(h, "Vary"), "Origin");
    EXPECT_TRUE(cors_headers(named, "https://evil.example").empty());
    const Preflight refused = cors_preflight(named, "https://evil.example", "POST", "");
    EXPECT_EQ(refused.status, 400);
    EXPECT_EQ(refused.body, "Disallowed CORS origin");
}

TEST(Cors, CredentialsNameTheOriginEvenForAny) {
    CorsPolicy creds;
    creds.credentials = true;
    const HeaderList h = cors_headers(creds, "https://app.example");
    EXPECT_EQ(header(h, "Access-Control-Allow-Origin"), "https://app.example");  // a browser refuses "*" with credentials
    EXPECT_EQ(header(h, "Access-Control-Allow-Credentials"), "true");
    EXPECT_EQ(header(h, "Vary"), "Origin");
}

TEST(Cors, PreflightsAskingForMoreThanAllowedAreRefused) {
    CorsPolicy narrow;
    narrow.methods = {"GET", "POST"};
    narrow.headers = {"Authorization"};
    EXPECT_EQ(cors_preflight(narrow, "https://a", "POST", "Authorization, Content-Type").status, 200);  // (Content-Type: always)
    EXPECT_EQ(header(cors_preflight(narrow, "https://a", "POST", "").headers, "Access-Control-Allow-Methods"), "GET, POST");
    EXPECT_EQ(header(cors_preflight(narrow, "https://a", "POST", "").headers, "Access-Control-Allow-Headers"), "Authorization");
    const Preflight method = cors_preflight(narrow, "https://a", "DELETE", "");
    EXPECT_EQ(method.status, 400);
    EXPECT_EQ(method.body, "Disallowed CORS method");
    const Preflight headers = cors_preflight(narrow, "https://a", "POST", "x-stainless-os");
    EXPECT_EQ(headers.body, "Disallowed CORS headers");
    narrow.origins = {"https://b"};
    EXPECT_EQ(cors_preflight(narrow, "https://a", "PUT", "x-y").body, "Disallowed CORS origin, method, headers");
}

TEST(Cors, OffMeansNoHeaders) {
    CorsPolicy off;
    off.origins.clear();
    EXPECT_FALSE(off.on());
    EXPECT_TRUE(cors_headers(off, "https://app.example").empty());
    EXPECT_TRUE(is_preflight("OPTIONS", "https://a", "POST"));
    EXPECT_FALSE(is_preflight("OPTIONS", "", "POST"));
    EXPECT_FALSE(is_preflight("OPTIONS", "https://a", ""));
    EXPECT_FALSE(is_preflight("POST", "https://a", "POST"));
}

}  // namespace
}  // namespace tps::serve
