// The OpenAI response objects for one generation request, built from the pieces the engine pushes
// (job.h): server-sent-event chunks while streaming (`text_completion` / `chat.completion.chunk`),
// or the whole `text_completion` / `chat.completion` at the end; log-probabilities in each
// endpoint's own shape; usage. docs/api.md describes the wire forms.
#pragma once

#include "tpserve/engine/tokenizer.h"
#include "tpserve/serve/job.h"

#include <string>
#include <vector>

namespace tps::serve {

class ResponseWriter {
public:
    ResponseWriter(const GenerationRequest& request, std::string model_name, const Tokenizer& tokenizer, int64_t created);

    // Streaming: the events to write for the start of the stream (chat: the assistant role), for
    // one piece, and after the last piece (the usage chunk if asked, then [DONE]).
    std::string stream_start() const;
    std::string stream_piece(const Delta& d);
    // (cached_tokens: of the prompt's, those the prefix cache held: usage.prompt_tokens_details)
    std::string stream_end(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) const;
    // An error after the stream began: one event, then [DONE].
    static std::string stream_error(const ApiError& e);

    // Not streaming: collect every piece, then the whole object.
    void add(const Delta& d);
    std::string whole(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens);

private:
    std::string event(const std::string& json) const;
    void add_logprobs(const std::vector<TokenOut>& tokens, void* into);
    std::string token_text(int32_t id) const;

    const GenerationRequest& req_;
    std::string model_;
    const Tokenizer& tok_;
    int64_t created_;
    std::string id_;
    // collected (not streaming)
    std::string text_;
    std::string finish_reason_;
    std::vector<TokenOut> tokens_;
    int64_t text_offset_ = 0;  // completions logprobs: code points before the next token
};

}  // namespace tps::serve
