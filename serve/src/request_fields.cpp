#include "request_fields.h"

#include "tpserve/common/json_scan.h"
#include "tpserve/serve/api_error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace tps::serve {
namespace {

constexpr int kMaxDepth = 64;  // deeper bodies are refused before the parser sees them

}  // namespace

Json parse_body(std::string_view body) {
    if (nests_deeper_than(body, kMaxDepth)) throw ApiError::invalid(fmt::format("the body nests more than {} levels deep", kMaxDepth));
    Json j;
    try {
        j = Json::parse(body);
    } catch (const Json::exception& e) {
        // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." without the prefix
        std::string what = e.what();
        if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
        throw ApiError::invalid("the body is not valid JSON: " + what);
    }
    if (!j.is_object()) throw ApiError::invalid(fmt::format("the body must be a JSON object, got {}", type_name(j)));
    return j;
}

Json chat_function_tools(const Json& tools, std::string_view client_type, bool type_optional, const char* schema_key,
                         std::string_view offered) {
    if (!tools.is_array()) throw ApiError::invalid(fmt::format("'tools' must be an array, got {}", type_name(tools)), "tools");
    Json out = Json::array();
    for (size_t i = 0; i < tools.size(); ++i) {
        const Json& t = tools[i];
        const std::string where = fmt::format("tools[{}]", i);
        if (!t.is_object()) throw ApiError::invalid(fmt::format("'{}' must be an object", where), "tools");
        const Json* type = field(t, "type");
        if (type ? !type->is_string() || type->get<std::string>() != client_type : !type_optional) {
            throw ApiError::invalid(fmt::format("'{}' is of type {}: this server offers {}", where, type ? type->dump() : "none", offered),
                                    "tools");
        }
        const Json* name = field(t, "name");
        if (!name || !name->is_string()) throw ApiError::invalid(fmt::format("'{}.name' must be a string", where), "tools");
        Json fn = {{"name", *name}};
        if (const Json* v = field(t, "description")) fn["description"] = *v;
        if (const Json* v = field(t, schema_key)) fn["parameters"] = *v;
        if (const Json* v = field(t, "strict")) fn["strict"] = *v;
        out.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    return out;
}

const char* type_name(const Json& v) {
    switch (v.type()) {
        case Json::value_t::null: return "null";
        case Json::value_t::boolean: return "a boolean";
        case Json::value_t::string: return "a string";
        case Json::value_t::array: return "an array";
        case Json::value_t::object: return "an object";
        case Json::value_t::binary: return "binary";
        case Json::value_t::discarded: return "nothing";
        default: return "a number";
    }
}

const Json* field(const Json& j, const char* name) {
    const auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
}

int64_t get_int(const Json& j, const char* name, int64_t lo, int64_t hi, int64_t fallback) {
    const Json* v = field(j, name);
    if (!v) return fallback;
    int64_t out = 0;
    if (v->is_number_integer()) {
        if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
            throw ApiError::invalid(fmt::format("'{}' must be between {} and {}", name, lo, hi), name);
        }
        out = v->get<int64_t>();
    } else if (v->is_number_float()) {
        const double d = v->get<double>();
        if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) > 9e15) {
            throw ApiError::invalid(fmt::format("'{}' must be an integer, got {}", name, v->dump()), name);
        }
        out = static_cast<int64_t>(d);
    } else {
        throw ApiError::invalid(fmt::format("'{}' must be an integer, got {}", name, type_name(*v)), name);
    }
    if (out < lo || out > hi) {
        throw ApiError::invalid(fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, out), name);
    }
    return out;
}

float get_float(const Json& j, const char* name, double lo, double hi, float fallback, bool lo_open) {
    const Json* v = field(j, name);
    if (!v) return fallback;
    if (!v->is_number()) throw ApiError::invalid(fmt::format("'{}' must be a number, got {}", name, type_name(*v)), name);
    const double d = v->get<double>();
    if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d == lo)) {
        throw ApiError::invalid(
            fmt::format("'{}' must be {} {} and at most {}, got {}", name, lo_open ? "above" : "at least", lo, hi, v->dump()),
            name);
    }
    return static_cast<float>(d);
}

bool get_bool(const Json& j, const char* name, bool fallback) {
    const Json* v = field(j, name);
    if (!v) return fallback;
    if (!v->is_boolean()) throw ApiError::invalid(fmt::format("'{}' must be a boolean, got {}", name, type_name(*v)), name);
    return v->get<bool>();
}

int64_t token_limit(const ServedModel& model) {
    const int64_t tok = model.tokenizer->vocab_size();
    return model.vocab > 0 ? std::min<int64_t>(tok, model.vocab) : tok;
}

}  // namespace tps::serve
