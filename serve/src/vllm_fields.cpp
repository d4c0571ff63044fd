// vLLM's request fields beyond the OpenAI API that change what is generated or shown: each is
// done as vLLM does it, or refused with a 400 naming it (an answer that silently ignores one is a
// wrong answer). docs/api.md lists them.
#include "request_fields.h"
#include "token_filter.h"
#include "tpserve/serve/reasoning.h"

#include <fmt/format.h>

#include <algorithm>

namespace tps::serve {
namespace {

std::vector<int32_t> allowed_ids(const Json& j, const ServedModel& model) {
    const Json* v = field(j, "allowed_token_ids");
    if (!v) return {};
    if (!v->is_array() || v->empty()) {
        throw ApiError::invalid("'allowed_token_ids' must be a non-empty array of token ids", "allowed_token_ids");
    }
    const int64_t vocab = token_limit(model);
    std::vector<int32_t> out;
    for (const Json& id : *v) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab) {
            throw ApiError::invalid(fmt::format("'allowed_token_ids': {} is not a token id of this model (0 to {})", id.dump(), vocab - 1),
                                    "allowed_token_ids");
        }
        out.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    return out;
}

// vLLM's reading of bad_words: each word's tokens as written (leading blanks dropped), and again
// after a space when that spells it with another first token in as many tokens (" word" as one
// token where "word" is one too).
std::vector<std::vector<int32_t>> bad_word_ids(const Json& j, const ServedModel& model) {
    const Json* v = field(j, "bad_words");
    if (!v) return {};
    if (!v->is_array()) throw ApiError::invalid(fmt::format("'bad_words' must be an array of strings, got {}", type_name(*v)), "bad_words");
    std::vector<std::vector<int32_t>> out;
    for (const Json& w : *v) {
        if (!w.is_string() || w.get<std::string>().find_first_not_of(" \t\n") == std::string::npos) {
            throw ApiError::invalid(fmt::format("'bad_words' must hold non-blank strings, got {}", w.dump()), "bad_words");
        }
        std::string word = w.get<std::string>();
        word.erase(0, word.find_first_not_of(" \t\n"));
        std::vector<int32_t> plain = model.tokenizer->encode(word, false);
        std::string after_space = " ";
        after_space += word;
        std::vector<int32_t> spaced = model.tokenizer->encode(after_space, false);
        if (!plain.empty()) out.push_back(plain);
        if (!spaced.empty() && !plain.empty() && spaced[0] != plain[0] && spaced.size() == plain.size()) out.push_back(spaced);
    }
    return out;
}

}  // namespace

void parse_vllm_fields(const Json& j, const ServedModel& model, GenerationRequest& r) {
    r.include_stop_str = get_bool(j, "include_stop_str_in_output", false);
    r.token_ids_as_text = get_bool(j, "return_tokens_as_token_ids", false);
    if (field(j, "truncate_prompt_tokens")) {
        const int64_t k = get_int(j, "truncate_prompt_tokens", -1, INT32_MAX, -1);
        if (k == 0) throw ApiError::invalid("'truncate_prompt_tokens' must be at least 1 (or -1: the context)", "truncate_prompt_tokens");
        r.truncate_prompt = k < 0 ? model.context : k;
    }
    if (const Json* v = field(j, "prompt_logprobs")) {
        // (vLLM's -1, the whole vocabulary, needs its --max-logprobs -1; 20 is its default limit)
        if (v->is_number_integer() && v->get<int64_t>() == -1) {
            throw ApiError::invalid(fmt::format("'prompt_logprobs' -1 (the whole vocabulary) is not offered: at most {} alternatives",
                                                kMaxTopLogprobs),
                                    "prompt_logprobs");
        }
        r.prompt_logprobs = static_cast<int>(get_int(j, "prompt_logprobs", 0, kMaxTopLogprobs, -1));
        if (r.stream) throw ApiError::invalid("'prompt_logprobs' is not available with 'stream': true (as vLLM's)", "prompt_logprobs");
    }
    if (field(j, "thinking_token_budget")) {
        // (-1: no budget; a reasoning model's thoughts end, forced, after this many output tokens)
        const auto budget = static_cast<int32_t>(get_int(j, "thinking_token_budget", -1, INT32_MAX, -1));
        if (r.endpoint != Endpoint::chat || !model.reasons) {
            throw ApiError::invalid("'thinking_token_budget' bounds a reasoning model's thoughts in chat: this server reads no "
                                    "thoughts here (--reasoning-parser)",
                                    "thinking_token_budget");
        }
        if (r.thinks && budget >= 0) {  // (a prompt that closed the thoughts leaves none to bound)
            r.sampling.thinking_budget = budget;
            r.sampling.think_end = model.tokenizer->encode(std::string(kThinkEnd), false);
        }
    }
    const std::vector<int32_t> allowed = allowed_ids(j, model);
    std::vector<std::vector<int32_t>> bad = bad_word_ids(j, model);
    if (!allowed.empty() || !bad.empty()) {
        auto filter = make_token_filter(token_limit(model), allowed, std::move(bad));
        r.sampling.constraint = r.sampling.constraint ? make_both(r.sampling.constraint->restart(), std::move(filter))
                                                      : std::move(filter);
    }
    // what is not offered: a 400, never a quiet answer of another kind
    if (get_bool(j, "use_beam_search", false)) {
        throw ApiError::invalid("'use_beam_search' is not supported (sample several choices with 'n')", "use_beam_search");
    }
    if (field(j, "chat_template")) {
        throw ApiError::invalid("'chat_template' is not accepted in a request (as vLLM without --trust-request-chat-template): "
                                "the model's own template is used",
                                "chat_template");
    }
    r.priority = get_int(j, "priority", INT32_MIN, INT32_MAX, 0);
    if (r.priority != 0 && !model.priority_scheduling) {
        throw ApiError::invalid("'priority' needs the server started with --scheduling-policy priority: requests are served "
                                "first come, first served",
                                "priority");
    }
}

}  // namespace tps::serve
