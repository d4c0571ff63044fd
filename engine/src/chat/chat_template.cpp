// tps::ChatTemplate: parses once (lexer, parser), renders many times (evaluator) with a context
// converted from JSON. The parsed program is immutable, so one template may render from many
// threads at once; only set_clock() changes it.
#include "tpserve/engine/chat_template.h"

#include "evaluator.h"
#include "lexer.h"
#include "parser.h"
#include "pystr.h"
#include "value.h"

#include "tpserve/common/check.h"

namespace tps {

struct ChatTemplate::Program {
    chat::Frame body;
    Clock clock;
};

namespace {

std::tm local_now() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    return tm;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string_view source, std::string origin) : origin_(std::move(origin)) {
    TPS_CHECK_AS(InputError, chat::pystr::valid_utf8(source), "{}: the chat template is not valid UTF-8", origin_);
    program_ = std::make_unique<Program>(Program{chat::parse(chat::tokenize(source, origin_), origin_), local_now});
}

ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
    TPS_CHECK(program_ != nullptr, "{}: render() on a moved-from ChatTemplate", origin_);
    TPS_CHECK_AS(InputError, context.is_object(), "{}: the chat template's context must be a JSON object, not {}",
                 origin_, context.type_name());
    chat::Value variables;
    try {
        variables = chat::from_json(context);
    } catch (const chat::EvalError& e) {
        throw InputError(fmt::format("{}: {}", origin_, e.what()));
    }
    return chat::render(program_->body, variables.as_dict(), origin_, program_->clock);
}

std::string ChatTemplate::render(const nlohmann::json& context) const {
    return render(nlohmann::ordered_json(context));
}

void ChatTemplate::set_clock(Clock clock) {
    TPS_CHECK(program_ != nullptr, "{}: set_clock() on a moved-from ChatTemplate", origin_);
    program_->clock = clock ? std::move(clock) : Clock(local_now);
}

}  // namespace tps
