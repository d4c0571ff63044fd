// What the tests of the other APIs served as chat share (responses_api_test.cpp,
// messages_api_test.cpp): a model whose chat template prints every message field, so a request's
// rendering shows the chat it was read as.
#pragma once

#include "serve_test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tps::serve::test {

// [role:name#tool_call_id]content<call_id name arguments>... then [assistant]
inline ServedModel show_all_model() {
    static const ChatTemplate tmpl(
        "{%- for m in messages -%}[{{ m.role }}{% if m.name %}:{{ m.name }}{% endif %}"
        "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}]{{ m.content }}"
        "{%- for c in m.tool_calls or [] %}<{{ c.id }} {{ c.function.name }} {{ c.function.arguments | tojson }}>{% endfor -%}"
        "{%- endfor -%}{% if add_generation_prompt %}[assistant]{% endif %}",
        "show-all");
    ServedModel m = served(4096);
    m.chat_template = &tmpl;
    return m;
}

// The events of a typed stream (`event: <type>` then `data: {...}`), each checked to carry its type.
inline std::vector<nlohmann::json> typed_events(const std::string& sse) {
    std::vector<nlohmann::json> out;
    for (size_t pos = 0; (pos = sse.find("event: ", pos)) != std::string::npos;) {
        const size_t line = sse.find('\n', pos);
        const std::string type = sse.substr(pos + 7, line - pos - 7);
        const size_t end = sse.find("\n\n", line);
        EXPECT_EQ(sse.compare(line + 1, 6, "data: "), 0);
        out.push_back(nlohmann::json::parse(sse.substr(line + 7, end - line - 7)));
        EXPECT_EQ(out.back()["type"], type);
        pos = end;
    }
    return out;
}

inline std::string rendered_prompt(const ServedModel& m, const std::vector<int32_t>& prompt) { return m.tokenizer->decode(prompt, false); }

}  // namespace tps::serve::test
