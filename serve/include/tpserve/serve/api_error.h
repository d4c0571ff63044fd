// An error the HTTP API answers with: an HTTP status and the OpenAI error object
// {"error": {"message", "type", "param", "code"}} (docs/api.md, "Errors"). Request parsing and the
// endpoints throw it; the HTTP session turns it into a response (or, in a stream that has started,
// into one `data: {"error": ...}` event).
#pragma once

#include "tpserve/common/error.h"

#include <string>

namespace tps::serve {

class ApiError : public Error {
public:
    ApiError(int status, std::string type, std::string message, std::string param = {}, std::string code = {})
        : Error(message), status_(status), type_(std::move(type)), param_(std::move(param)), code_(std::move(code)) {}

    int status() const noexcept { return status_; }
    const std::string& type() const noexcept { return type_; }
    const std::string& param() const noexcept { return param_; }
    const std::string& code() const noexcept { return code_; }
    // {"error": {...}} as JSON text
    std::string body() const;

    // The common ones.
    static ApiError invalid(std::string message, std::string param = {}) {
        return ApiError(400, "invalid_request_error", std::move(message), std::move(param));
    }
    static ApiError not_found(std::string message, std::string code = {}) {
        return ApiError(404, "not_found_error", std::move(message), {}, std::move(code));
    }
    static ApiError unavailable(std::string message) {
        return ApiError(503, "service_unavailable", std::move(message));
    }

private:
    int status_;
    std::string type_;
    std::string param_;
    std::string code_;
};

}  // namespace tps::serve
