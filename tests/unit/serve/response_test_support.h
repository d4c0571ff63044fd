// What the response tests share (response_test.cpp, reasoning_test.cpp): an engine piece, and the
// JSON events of a server-sent-event stream.
#pragma once

#include "tpserve/serve/job.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tps::serve::test {

// (`tokens`: the output tokens so far, this piece's included)
inline Delta piece(std::string text, std::string finish = {}, int64_t tokens = 0) {
    Delta d;
    d.text = std::move(text);
    d.finish_reason = std::move(finish);
    d.completion_tokens = tokens;
    return d;
}

// The JSON events of a stream (not [DONE]).
inline std::vector<nlohmann::json> events(const std::string& sse) {
    std::vector<nlohmann::json> out;
    for (size_t pos = 0; (pos = sse.find("data: ", pos)) != std::string::npos;) {
        const size_t end = sse.find("\n\n", pos);
        const std::string payload = sse.substr(pos + 6, end - pos - 6);
        if (payload != "[DONE]") out.push_back(nlohmann::json::parse(payload));
        pos = end;
    }
    return out;
}

}  // namespace tps::serve::test
