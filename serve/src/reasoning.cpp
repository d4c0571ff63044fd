// A reasoning model's output split into thoughts and answer (reasoning.h).
#include "tpserve/serve/reasoning.h"

#include "tpserve/common/check.h"
#include "partial_tag.h"

#include <algorithm>

namespace tps::serve {
namespace {

constexpr std::string_view kBlanks = " \t\n\r";

}  // namespace

bool prompt_leaves_thinking(std::string_view prompt) {
    const size_t last = prompt.find_last_not_of(kBlanks);
    return last == std::string_view::npos || !prompt.substr(0, last + 1).ends_with(kThinkEnd);
}

bool reasoning_parser_named(const std::string& name, std::string_view chat_template) {
    if (name == "auto") return chat_template.find(kThinkEnd) != std::string_view::npos;
    TPS_CHECK_AS(UsageError, name == "deepseek_r1" || name == "qwen3" || name == "none",
                 "--reasoning-parser: '{}' is not deepseek_r1, qwen3, none or auto", name);
    return name != "none";
}

ReasoningSplit split_reasoning(std::string_view output, bool thinks) {
    ReasoningSplit s;
    const bool opens = output.starts_with(kThinkStart);
    if (!thinks && !opens) {
        s.content = output;
        return s;
    }
    s.reasons = true;
    std::string_view thoughts = opens ? output.substr(kThinkStart.size()) : output;
    const size_t end = thoughts.find(kThinkEnd);
    if (end == std::string_view::npos) {
        s.reasoning = thoughts;
        return s;
    }
    s.ended = true;
    s.reasoning = thoughts.substr(0, end);
    s.content = thoughts.substr(end + kThinkEnd.size());
    return s;
}

ReasoningStream::Piece ReasoningStream::push(std::string_view more, bool last) {
    said_ += more;
    Piece p;
    // "<th" may yet be <think>, which is left out: wait
    if (!last && said_.size() < kThinkStart.size() && kThinkStart.starts_with(said_)) return p;
    const ReasoningSplit s = split_reasoning(said_, thinks_);
    size_t settled = s.reasoning.size();
    if (!last && s.reasons && !s.ended) settled -= partial_tag(s.reasoning, kThinkEnd);  // "</thi" may yet be </think>
    if (settled > reasoning_shown_) {
        p.reasoning = s.reasoning.substr(reasoning_shown_, settled - reasoning_shown_);
        reasoning_shown_ = settled;
    }
    if (s.content.size() > content_shown_) {
        p.content = s.content.substr(content_shown_);
        content_shown_ = s.content.size();
    }
    return p;
}

}  // namespace tps::serve
