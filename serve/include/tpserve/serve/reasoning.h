// A reasoning model's chat output (DeepSeek-R1 and its distills, QwQ, Qwen3): its thoughts between
// <think> and </think>, then the answer. The server gives the thoughts as `reasoning_content` and
// the answer as `content`, as vLLM's deepseek_r1 / qwen3 reasoning parsers and llama.cpp's
// --reasoning-format do (docs/api.md, "Reasoning").
#pragma once

#include <string>
#include <string_view>

namespace tps::serve {

inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";

// Whether a chat prompt leaves the model to think first: unless the prompt ends by closing the
// thoughts itself (Qwen3's template with enable_thinking false ends "<think>\n\n</think>\n\n"),
// a reasoning model's answer starts with them, whether the template opened <think> (DeepSeek-R1's
// newer templates, QwQ) or the model writes it.
bool prompt_leaves_thinking(std::string_view prompt);

// --reasoning-parser: whether chat output is split. deepseek_r1 and qwen3 (vLLM's names; both
// read <think> ... </think>) split it, none does not, auto does when the chat template writes
// </think>. UsageError for any other name.
bool reasoning_parser_named(const std::string& name, std::string_view chat_template);

// An output split into thoughts and answer (views into it). `thinks`: the prompt left the model
// thinking, so the output is thoughts up to </think> (a <think> it starts with left out), all of
// it if </think> never comes. Otherwise only an output that starts with <think> has thoughts.
struct ReasoningSplit {
    std::string_view reasoning;  // without the tags
    std::string_view content;    // after </think>; the whole output when there are no thoughts
    bool reasons = false;        // the output has thoughts
    bool ended = false;          // ... and </think> came
};
ReasoningSplit split_reasoning(std::string_view output, bool thinks);

// The same split while the output streams in: each piece gives what it settles of the thoughts and
// of the answer. A tail that may be the start of a tag waits for the next piece (or the last).
class ReasoningStream {
public:
    explicit ReasoningStream(bool thinks) : thinks_(thinks) {}

    struct Piece {
        std::string reasoning;
        std::string content;
    };
    Piece push(std::string_view more, bool last);

private:
    bool thinks_;
    std::string said_;
    size_t reasoning_shown_ = 0, content_shown_ = 0;
};

}  // namespace tps::serve
