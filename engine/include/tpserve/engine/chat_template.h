// Chat templates: the model's own Jinja template (tokenizer_config.json "chat_template" or GGUF
// tokenizer.chat_template), rendered by a small interpreter for the Jinja subset real templates
// use (ChatML / SmolLM2 / Qwen2, Llama 2 and 3, Mistral). Output is identical to Python jinja2's as
// transformers' apply_chat_template configures it. A construct outside the subset is a
// tps::InputError naming it and where it is, at parse time.
#pragma once

#include <nlohmann/json.hpp>

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace tps {

class ChatTemplate {
public:
    // What strftime_now() formats. The default is the local wall clock at render time, as
    // transformers' datetime.now(); tests fix it.
    using Clock = std::function<std::tm()>;

    // Parses the template. `origin` names it in errors ("tokenizer_config.json").
    ChatTemplate(std::string_view source, std::string origin);
    ChatTemplate(ChatTemplate&&) noexcept;
    ChatTemplate& operator=(ChatTemplate&&) noexcept;
    ~ChatTemplate();

    // Renders with `context` as the template's variables, as transformers' apply_chat_template
    // does: {"messages": [{"role", "content"}...], "tools": null, "documents": null,
    // "add_generation_prompt": bool, "bos_token": "...", "eos_token": "...", plus anything else the
    // caller passes}. Key order matters where a template prints a dict (tool schemas through
    // |tojson print in insertion order, as Python does), so parse requests into ordered_json; a
    // plain nlohmann::json has already sorted its keys. Errors while rendering (raise_exception(...)
    // in the template, a type error) are tps::InputError "<origin>:<line>: <the template's message>".
    std::string render(const nlohmann::ordered_json& context) const;
    std::string render(const nlohmann::json& context) const;

    void set_clock(Clock clock);

private:
    struct Program;
    std::unique_ptr<Program> program_;
    std::string origin_;
};

}  // namespace tps
