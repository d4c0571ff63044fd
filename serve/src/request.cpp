// Parsing and checking the OpenAI request bodies (request.h). Every rejection is an ApiError whose
// message names the field and what was wrong with it; nothing here trusts the body's shape.
#include "tpserve/serve/request.h"
#include "tpserve/serve/reasoning.h"

#include "request_fields.h"
#include "tpserve/common/json_scan.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace tps::serve {
namespace {

// A prompt the tokenizer made may hold added tokens the model has no row for.
void check_prompt_ids(const std::vector<int32_t>& prompt, const ServedModel& model) {
    const int64_t vocab = token_limit(model);
    for (int32_t t : prompt) {
        if (t >= vocab) {
            throw ApiError::invalid(fmt::format("the prompt encodes to token {}, outside the model's vocabulary of {}", t, vocab),
                                    "prompt");
        }
    }
}

// vLLM's min_tokens: the stop tokens are held back (and stop strings not looked for) until that
// many tokens are out; at most max_tokens.
void fit_min_tokens(const Json& j, GenerationRequest& r) {
    const int64_t n = get_int(j, "min_tokens", 0, 1 << 24, 0);
    if (n > r.max_tokens) {
        throw ApiError::invalid(fmt::format("'min_tokens' {} is more than the {} tokens asked for", n, r.max_tokens), "min_tokens");
    }
    r.sampling.min_tokens = static_cast<int32_t>(n);
    if (n > 0) r.sampling.hold = r.stop_ids;
}

// What the engine's Sampler will check, checked here: a request it would refuse must be a 400,
// never an error on the engine's thread.
void check_sampling(const SamplingParams& p) {
    try {
        Sampler::validate(p);
    } catch (const UsageError& e) {
        throw ApiError::invalid(e.what());
    }
}

// Fields both endpoints share: sampling, stop, streaming, n, the model's name.
void parse_common(const Json& j, const ServedModel& model, GenerationRequest& r) {
    const Json* name = field(j, "model");
    if (name) {
        if (!name->is_string()) throw ApiError::invalid(fmt::format("'model' must be a string, got {}", type_name(*name)), "model");
        if (!model.answers_to(name->get<std::string>())) {
            throw ApiError::not_found(
                fmt::format("The model '{}' does not exist; this server serves '{}'", name->get<std::string>(), model.name),
                "model_not_found");
        }
        r.model = name->get<std::string>();
    }
    r.n = static_cast<int>(get_int(j, "n", 1, kMaxChoices, 1));
    // best_of = n is n choices; the best n of more is not offered (vLLM's V1 engine dropped it
    // too), and fewer than n is an error (OpenAI's rule)
    const int64_t best_of = get_int(j, "best_of", 1, 1 << 20, r.n);
    if (best_of < r.n) throw ApiError::invalid(fmt::format("'best_of' ({}) must be at least 'n' ({})", best_of, r.n), "best_of");
    if (best_of > r.n) {
        throw ApiError::invalid(fmt::format("'best_of' above 'n' ({}) is not supported; ask for that many choices with 'n'", r.n),
                                "best_of");
    }
    r.echo = get_bool(j, "echo", false);
    if (r.endpoint == Endpoint::chat) r.echo = false;  // (chat's echo is the last assistant message: parse_chat_request)

    SamplingParams& p = r.sampling;
    const SamplingParams& d = model.sampling_defaults;
    p.temperature = get_float(j, "temperature", 0, 2, d.temperature);
    p.top_p = get_float(j, "top_p", 0, 1, d.top_p, true);
    p.top_k = static_cast<int32_t>(get_int(j, "top_k", -1, 1 << 24, d.top_k));
    if (p.top_k < 0) p.top_k = 0;  // vLLM: -1 means off
    p.min_p = get_float(j, "min_p", 0, 1, d.min_p);
    p.presence_penalty = get_float(j, "presence_penalty", -2, 2, d.presence_penalty);
    p.frequency_penalty = get_float(j, "frequency_penalty", -2, 2, d.frequency_penalty);
    p.repetition_penalty = get_float(j, "repetition_penalty", 0, 10, d.repetition_penalty, true);
    if (const Json* lb = field(j, "logit_bias")) {
        if (!lb->is_object()) {
            throw ApiError::invalid(fmt::format("'logit_bias' must be an object of token ids to numbers, got {}", type_name(*lb)),
                                    "logit_bias");
        }
        const int64_t vocab = token_limit(model);
        for (auto it = lb->begin(); it != lb->end(); ++it) {
            const std::string& key = it.key();
            int64_t id = -1;
            if (!key.empty() && key.size() <= 10 && (key.size() == 1 || key[0] != '0') &&
                std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; })) {
                id = std::stoll(key);
            }
            if (id < 0 || id >= vocab) {
                throw ApiError::invalid(fmt::format("'logit_bias': '{}' is not a token id of this model (0 to {})", key, vocab - 1),
                                        "logit_bias");
            }
            const double v = it->is_number() ? it->get<double>() : std::nan("");
            if (!std::isfinite(v) || v < -100 || v > 100) {
                throw ApiError::invalid(fmt::format("'logit_bias': the bias of token {} must be a number in [-100, 100], got {}", key,
                                                    it->dump()),
                                        "logit_bias");
            }
            p.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(v));
        }
        std::sort(p.logit_bias.begin(), p.logit_bias.end());
        if (p.logit_bias.size() > kMaxLogitBias) {
            throw ApiError::invalid(fmt::format("'logit_bias' holds at most {} tokens, got {}", kMaxLogitBias, p.logit_bias.size()),
                                    "logit_bias");
        }
    }
    if (field(j, "seed")) {
        p.seed = static_cast<uint64_t>(get_int(j, "seed", INT64_MIN, INT64_MAX, 0));
    } else {
        // no seed: every request its own randomness (the same seed for all would repeat answers)
        static thread_local std::mt19937_64 seeds{std::random_device{}()};
        p.seed = seeds();
    }

    if (const Json* stop = field(j, "stop")) {
        auto add = [&](const Json& s) {
            if (!s.is_string()) throw ApiError::invalid(fmt::format("'stop' must hold strings, got {}", type_name(s)), "stop");
            if (s.get<std::string>().size() > kMaxStopBytes) {
                throw ApiError::invalid(fmt::format("a 'stop' string may be at most {} bytes, got {}", kMaxStopBytes,
                                                    s.get<std::string>().size()),
                                        "stop");
            }
            if (!s.get<std::string>().empty()) r.stop.push_back(s.get<std::string>());
        };
        if (stop->is_array()) {
            if (stop->size() > kMaxStopStrings) {
                throw ApiError::invalid(fmt::format("'stop' holds at most {} strings, got {}", kMaxStopStrings, stop->size()), "stop");
            }
            for (const auto& s : *stop) add(s);
        } else {
            add(*stop);
        }
    }
    r.stop_ids = get_bool(j, "ignore_eos", false) ? std::vector<int32_t>{} : model.stop_ids;
    r.eos_ids = r.stop_ids.size();
    if (const Json* ids = field(j, "stop_token_ids")) {
        // vLLM's extension: more tokens that end the output (ignore_eos leaves these)
        const int64_t vocab = token_limit(model);
        if (!ids->is_array()) {
            throw ApiError::invalid(fmt::format("'stop_token_ids' must be an array of token ids, got {}", type_name(*ids)),
                                    "stop_token_ids");
        }
        for (const Json& id : *ids) {
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab) {
                throw ApiError::invalid(fmt::format("'stop_token_ids': {} is not a token id of this model (0 to {})", id.dump(),
                                                    vocab - 1),
                                        "stop_token_ids");
            }
            r.stop_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
    }
    parse_output_format(j, model, r);
    r.skip_special_tokens = get_bool(j, "skip_special_tokens", true);
    r.stream = get_bool(j, "stream", false);
    if (const Json* so = field(j, "stream_options")) {
        if (!so->is_object()) throw ApiError::invalid(fmt::format("'stream_options' must be an object, got {}", type_name(*so)), "stream_options");
        if (!r.stream) throw ApiError::invalid("'stream_options' is only allowed with 'stream': true", "stream_options");
        r.include_usage = get_bool(*so, "include_usage", false);
        // (vLLM's: usage in every chunk too, with include_usage only)
        r.continuous_usage = get_bool(*so, "continuous_usage_stats", false) && r.include_usage;
    }
    if (const Json* user = field(j, "user"); user && !user->is_string()) {
        throw ApiError::invalid(fmt::format("'user' must be a string, got {}", type_name(*user)), "user");
    }
}

// max_tokens against the context: an explicit value that does not fit is an error, a default is cut.
void fit_max_tokens(const Json& j, const char* name, const ServedModel& model, GenerationRequest& r, int64_t fallback) {
    const auto n = static_cast<int64_t>(r.prompt.size());
    if (n == 0) throw ApiError::invalid("the prompt is empty", r.endpoint == Endpoint::chat ? "messages" : "prompt");
    // (code context_length_exceeded, as OpenAI's: clients tell this error from others by it)
    if (n >= model.context) {
        throw ApiError(400, "invalid_request_error",
                       fmt::format("This model's maximum context length is {} tokens; the prompt has {} tokens, leaving no room to "
                                   "generate",
                                   model.context, n),
                       r.endpoint == Endpoint::chat ? "messages" : "prompt", "context_length_exceeded");
    }
    const bool given = field(j, name) != nullptr;
    r.max_tokens = get_int(j, name, r.echo ? 0 : 1, INT32_MAX, fallback);  // echo with 0: the prompt scored, nothing generated
    if (given && n + r.max_tokens > model.context) {
        throw ApiError(400, "invalid_request_error",
                       fmt::format("This model's maximum context length is {} tokens; the prompt has {} tokens and {} = {} asks "
                                   "for {} more",
                                   model.context, n, name, r.max_tokens, r.max_tokens),
                       name, "context_length_exceeded");
    }
    r.max_tokens = std::min(r.max_tokens, model.context - n);
}

std::vector<int32_t> token_array(const Json& v, const ServedModel& model, const char* name) {
    std::vector<int32_t> out;
    const int64_t vocab = token_limit(model);
    for (const auto& t : v) {
        if (!t.is_number_integer()) throw ApiError::invalid(fmt::format("'{}' token ids must be integers, got {}", name, type_name(t)), name);
        const int64_t id = t.is_number_unsigned() && t.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? -1 : t.get<int64_t>();
        if (id < 0 || id >= vocab) {
            throw ApiError::invalid(fmt::format("'{}' holds token id {}, outside the vocabulary of {}", name, t.dump(), vocab), name);
        }
        out.push_back(static_cast<int32_t>(id));
    }
    return out;
}

// The prompts: a string, an array of token ids, or an array of either (several prompts).
std::vector<std::vector<int32_t>> completion_prompts(const Json& j, const ServedModel& model) {
    const Json* p = field(j, "prompt");
    if (!p) throw ApiError::invalid("'prompt' is required", "prompt");
    if (p->is_string()) return {model.tokenizer->encode(p->get<std::string>(), true)};
    if (!p->is_array()) throw ApiError::invalid(fmt::format("'prompt' must be a string or an array, got {}", type_name(*p)), "prompt");
    if (p->empty()) throw ApiError::invalid("'prompt' is empty", "prompt");
    if (p->front().is_number()) return {token_array(*p, model, "prompt")};
    if (p->size() > static_cast<size_t>(kMaxChoices)) {
        throw ApiError::invalid(fmt::format("'prompt' holds at most {} prompts, got {}", kMaxChoices, p->size()), "prompt");
    }
    std::vector<std::vector<int32_t>> out;
    for (const Json& one : *p) {
        if (one.is_string()) out.push_back(model.tokenizer->encode(one.get<std::string>(), true));
        else if (one.is_array()) out.push_back(token_array(one, model, "prompt"));
        else throw ApiError::invalid(fmt::format("'prompt' must hold strings or token-id arrays, got {}", type_name(one)), "prompt");
    }
    return out;
}

// The messages as the template sees them: content parts joined into one string; every other
// field of a message kept as it came.
Json chat_messages(const Json& j) {
    const Json* m = field(j, "messages");
    if (!m) throw ApiError::invalid("'messages' is required", "messages");
    if (!m->is_array()) throw ApiError::invalid(fmt::format("'messages' must be an array, got {}", type_name(*m)), "messages");
    if (m->empty()) throw ApiError::invalid("'messages' is empty", "messages");
    Json out = Json::array();
    for (size_t i = 0; i < m->size(); ++i) {
        const Json& msg = (*m)[i];
        const std::string where = fmt::format("messages[{}]", i);
        if (!msg.is_object()) throw ApiError::invalid(fmt::format("'{}' must be an object, got {}", where, type_name(msg)), where);
        const Json* role = field(msg, "role");
        if (!role || !role->is_string()) throw ApiError::invalid(fmt::format("'{}.role' must be a string", where), where + ".role");
        Json copy = msg;
        const Json* content = field(msg, "content");
        if (content && content->is_array()) {
            std::string text;
            for (const auto& part : *content) {
                const Json* type = part.is_object() ? field(part, "type") : nullptr;
                if (!type || !type->is_string() || type->get<std::string>() != "text" || !field(part, "text") ||
                    !part["text"].is_string()) {
                    throw ApiError::invalid(fmt::format("'{}.content' parts must be {{\"type\": \"text\", \"text\": \"...\"}}; "
                                                        "other kinds of content are not supported",
                                                        where),
                                            where + ".content");
                }
                text += part["text"].get<std::string>();
            }
            copy["content"] = text;
        } else if (content && !content->is_string()) {
            throw ApiError::invalid(fmt::format("'{}.content' must be a string or an array of parts, got {}", where,
                                                type_name(*content)),
                                    where + ".content");
        }
        // an earlier turn's calls: their arguments come as JSON text; templates print an object
        // (as vLLM hands them over)
        if (const Json* calls = field(msg, "tool_calls"); calls && calls->is_array()) {
            for (size_t k = 0; k < calls->size(); ++k) {
                Json& call = copy["tool_calls"][k];
                if (!call.is_object() || !call.contains("function") || !call["function"].is_object()) continue;
                Json& fn = call["function"];
                if (!fn.contains("arguments") || !fn["arguments"].is_string()) continue;
                const std::string text = fn["arguments"].get<std::string>();
                Json args = text.empty() ? Json::object() : Json::parse(text, nullptr, false);  // "": no arguments
                if (args.is_discarded()) {
                    throw ApiError::invalid(fmt::format("'{}.tool_calls[{}].function.arguments' is not JSON", where, k),
                                            where + ".tool_calls");
                }
                fn["arguments"] = std::move(args);
            }
        }
        out.push_back(std::move(copy));
    }
    return out;
}

// What continue_final_message appends to the last message's text to find where it ends in the
// rendered chat (transformers' render_jinja_template does the same, with the same tag).
constexpr std::string_view kContinueTag = "CONTINUE_FINAL_MESSAGE_TAG ";

// The rendered chat cut where the last message's text ends (its tag), as transformers does: at
// the tag when the template kept it whole, else at the tag with the blanks before it trimmed.
std::string cut_at_final_message(std::string text, std::string_view final_text) {
    constexpr std::string_view kBlanks = " \t\n\r\f\v";
    const size_t first = final_text.find_first_not_of(kBlanks);
    final_text = first == std::string_view::npos ? std::string_view() : final_text.substr(first, final_text.find_last_not_of(kBlanks) + 1 - first);
    const std::string_view tag = kContinueTag.substr(0, kContinueTag.size() - 1);  // (without its space)
    const size_t at = text.rfind(tag);
    if (at == std::string::npos || text.find(final_text) == std::string::npos) {
        throw ApiError::invalid("'continue_final_message': the last message does not appear in the chat the template "
                                "renders (the template drops or rewrites part of it)",
                                "continue_final_message");
    }
    const bool whole = std::string_view(text).substr(at).starts_with(kContinueTag);
    text.resize(at);
    if (!whole) text.erase(text.find_last_not_of(kBlanks) + 1);
    return text;
}

// The template's context: the messages, tools and documents (null when not given, as transformers
// passes them), the special tokens, add_generation_prompt, and chat_template_kwargs over the
// special tokens (vLLM's and transformers' order). continue_final_message renders the chat with
// the last message left open for the model to go on with.
std::string render_chat(const Json& j, const ServedModel& model) {
    if (!model.chat_template) throw ApiError::invalid(fmt::format("the model '{}' has no chat template; use /v1/completions", model.name));
    const bool continues = get_bool(j, "continue_final_message", false);
    const bool prompts = get_bool(j, "add_generation_prompt", !continues);
    if (continues && prompts) {
        throw ApiError::invalid("'continue_final_message' and 'add_generation_prompt' cannot both be true: the first goes on "
                                "with the last message, the second starts a new one",
                                "continue_final_message");
    }
    Json messages = chat_messages(j);
    std::string final_text;  // continue_final_message: the last message's text
    if (continues) {
        Json& content = messages.back()["content"];
        if (!content.is_string()) {
            throw ApiError::invalid("'continue_final_message' needs the last message to have text content to go on with",
                                    "continue_final_message");
        }
        final_text = content.get<std::string>();
        content = final_text + std::string(kContinueTag);
    }
    Json context = {{"messages", std::move(messages)}, {"tools", nullptr}, {"documents", nullptr},
                    {"add_generation_prompt", prompts}, {"bos_token", model.bos_token}, {"eos_token", model.eos_token}};
    if (const Json* tools = field(j, "tools")) context["tools"] = *tools;  // (checked by parse_tools)
    if (const Json* docs = field(j, "documents")) {
        if (!docs->is_array() || std::any_of(docs->begin(), docs->end(), [](const Json& d) { return !d.is_object(); })) {
            throw ApiError::invalid("'documents' must be an array of objects (such as {\"title\": ..., \"text\": ...})", "documents");
        }
        context["documents"] = *docs;
    }
    if (const Json* effort = field(j, "reasoning_effort")) {
        // OpenAI's chat field, as vLLM passes it: the template reads it (gpt-oss's does; others leave it)
        if (!effort->is_string()) {
            throw ApiError::invalid(fmt::format("'reasoning_effort' must be a string, got {}", type_name(*effort)), "reasoning_effort");
        }
        context["reasoning_effort"] = *effort;
    }
    if (const Json* kwargs = field(j, "chat_template_kwargs")) {
        if (!kwargs->is_object()) {
            throw ApiError::invalid(fmt::format("'chat_template_kwargs' must be an object, got {}", type_name(*kwargs)),
                                    "chat_template_kwargs");
        }
        for (const auto& [key, value] : kwargs->items()) {
            if (key == "messages" || key == "tools" || key == "documents" || key == "add_generation_prompt" ||
                key == "continue_final_message") {
                throw ApiError::invalid(fmt::format("'chat_template_kwargs.{}': give '{}' as a field of the request itself", key, key),
                                        "chat_template_kwargs");
            }
            context[key] = value;
        }
    }
    std::string text;
    try {
        text = model.chat_template->render(context);
    } catch (const InputError& e) {
        throw ApiError::invalid(fmt::format("the chat template refused the messages: {}", e.what()), "messages");
    }
    if (continues) text = cut_at_final_message(std::move(text), final_text);
    return text;
}

// as transformers' apply_chat_template(tokenize=True): the template writes the special tokens
// (add_special_tokens, vLLM's, adds the tokenizer's own BOS on top: off by default for chat)
std::vector<int32_t> chat_tokens(const std::string& text, const ServedModel& model, bool add_special = false) {
    return model.tokenizer->encode(text, add_special);
}

// `tools` (functions the model may call) and `tool_choice`: with "auto" (the default when there are
// tools) the output is read for calls; "none" leaves it text; "required" or a named function
// forces calls with a grammar (force_tool_calls).
// The names of the functions in `tools`, each checked for its shape.
std::vector<std::string> tool_names(const Json& j) {
    const Json* tools = field(j, "tools");
    std::vector<std::string> names;
    if (tools) {
        if (!tools->is_array()) throw ApiError::invalid(fmt::format("'tools' must be an array, got {}", type_name(*tools)), "tools");
        for (size_t i = 0; i < tools->size(); ++i) {
            const Json& t = (*tools)[i];
            const Json* type = t.is_object() ? field(t, "type") : nullptr;
            const Json* fn = t.is_object() ? field(t, "function") : nullptr;
            const Json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
            if (!type || *type != "function" || !name || !name->is_string() || name->get<std::string>().empty()) {
                throw ApiError::invalid(fmt::format("'tools[{}]' must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}", i),
                                        "tools");
            }
            names.push_back(name->get<std::string>());
        }
    }
    return names;
}

void parse_tools(const Json& j, const ServedModel& model, GenerationRequest& r) {
    const Json* tools = field(j, "tools");
    const std::vector<std::string> names = tool_names(j);
    std::string choice = "auto";
    std::string named;
    if (const Json* tc = field(j, "tool_choice")) {
        if (tc->is_object()) {
            const Json* fn = field(*tc, "function");
            const Json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
            if (!name || !name->is_string()) {
                throw ApiError::invalid("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                                        "{\"type\": \"function\", \"function\": {\"name\": ...}}",
                                        "tool_choice");
            }
            named = name->get<std::string>();
            if (std::find(names.begin(), names.end(), named) == names.end()) {
                throw ApiError::invalid(fmt::format("'tool_choice' names the function '{}', which is not among 'tools'", named),
                                        "tool_choice");
            }
            choice = "named";
        } else {
            if (!tc->is_string()) throw ApiError::invalid(fmt::format("'tool_choice' must be a string or an object, got {}", type_name(*tc)), "tool_choice");
            choice = tc->get<std::string>();
            if (choice != "auto" && choice != "none" && choice != "required") {
                throw ApiError::invalid(fmt::format("'tool_choice' must be \"auto\", \"none\", \"required\" or a function, got \"{}\"", choice),
                                        "tool_choice");
            }
            if (choice == "required" && names.empty()) {
                throw ApiError::invalid("'tool_choice' \"required\" needs 'tools' to call", "tool_choice");
            }
        }
    }
    r.one_tool_call = !get_bool(j, "parallel_tool_calls", true);
    if (choice == "required" || choice == "named") {
        force_tool_calls(*tools, named, model, r);
        return;
    }
    r.reads_tool_calls = tools && !tools->empty() && choice == "auto" && model.tool_parser != ToolParser::none;
    if (tools && choice == "auto" && any_strict(*tools)) strict_tool_calls(*tools, model, r);
}

void parse_logprobs(const Json& j, GenerationRequest& r) {
    if (r.endpoint == Endpoint::completions) {
        if (const Json* v = field(j, "logprobs"); v && v->is_boolean()) {
            r.logprobs = v->get<bool>() ? 0 : -1;  // some clients send true
        } else {
            r.logprobs = static_cast<int>(get_int(j, "logprobs", 0, kMaxTopLogprobs, -1));
        }
        return;
    }
    const bool on = get_bool(j, "logprobs", false);
    const int top = static_cast<int>(get_int(j, "top_logprobs", 0, kMaxTopLogprobs, 0));
    if (top > 0 && !on) throw ApiError::invalid("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    r.logprobs = on ? top : -1;
}

}  // namespace

std::string ApiError::body() const {
    nlohmann::ordered_json e = {{"message", what()}, {"type", type_}, {"param", nullptr}, {"code", nullptr}};
    if (!param_.empty()) e["param"] = param_;
    if (!code_.empty()) e["code"] = code_;
    return nlohmann::ordered_json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// The choices of a request whose fields (all but the prompt) are parsed into `base`: n for each
// prompt, each prompt's max_tokens fitted to it, each choice's seed the request's + its sample.
std::vector<GenerationRequest> choices_of(const Json& j, const char* limit, int64_t fallback, const ServedModel& model,
                                          const GenerationRequest& base, const std::vector<std::vector<int32_t>>& prompts) {
    const size_t total = prompts.size() * static_cast<size_t>(base.n);
    if (total > static_cast<size_t>(kMaxChoices)) {
        throw ApiError::invalid(fmt::format("{} prompts with 'n' {} make {} choices; at most {} are served in one request",
                                            prompts.size(), base.n, total, kMaxChoices),
                                "n");
    }
    std::vector<GenerationRequest> out;
    out.reserve(total);
    for (size_t i = 0; i < prompts.size(); ++i) {
        GenerationRequest r = base;
        r.prompt = prompts[i];
        if (base.truncate_prompt > 0 && static_cast<int64_t>(r.prompt.size()) > base.truncate_prompt) {
            r.prompt.erase(r.prompt.begin(), r.prompt.end() - base.truncate_prompt);  // (vLLM's: the last tokens stay)
        }
        try {
            check_prompt_ids(r.prompt, model);
            fit_max_tokens(j, limit, model, r, fallback);
            fit_min_tokens(j, r);
        } catch (const ApiError& e) {
            if (prompts.size() == 1) throw;
            throw ApiError(e.status(), e.type(), fmt::format("prompt {}: {}", i, e.what()), e.param(), e.code());
        }
        check_sampling(r.sampling);
        r.choices = static_cast<int>(total);
        for (int k = 0; k < base.n; ++k) {
            GenerationRequest c = r;
            c.index = static_cast<int>(i) * base.n + k;
            c.sampling.seed = base.sampling.seed + static_cast<uint64_t>(k);
            out.push_back(std::move(c));
        }
    }
    return out;
}

}  // namespace

std::vector<GenerationRequest> parse_completion_request(std::string_view body, const ServedModel& model) {
    const Json j = parse_body(body);
    GenerationRequest r;
    r.endpoint = Endpoint::completions;
    parse_common(j, model, r);
    parse_logprobs(j, r);
    parse_vllm_fields(j, model, r);
    if (field(j, "suffix")) throw ApiError::invalid("'suffix' is not supported", "suffix");
    r.sampling.top_logprobs = std::max(0, r.logprobs);
    return choices_of(j, "max_tokens", 16, model, r, completion_prompts(j, model));
}

std::vector<GenerationRequest> parse_chat_request(std::string_view body, const ServedModel& model) {
    const Json j = parse_body(body);
    GenerationRequest r;
    r.endpoint = Endpoint::chat;
    (void)tool_names(j);  // (the template reads them: bad ones are refused first, naming the field)
    const std::string prompt = render_chat(j, model);
    r.splits_reasoning = model.reasons;
    r.thinks = model.reasons && prompt_leaves_thinking(prompt);  // (before the output format: it applies after the thoughts)
    r.include_reasoning = get_bool(j, "include_reasoning", true);
    if (get_bool(j, "echo", false)) {
        // vLLM's chat echo: the answer starts with the last message when it is the assistant's (a
        // reply the client began, with continue_final_message)
        const Json last = chat_messages(j).back();  // (content parts joined)
        const Json* content = field(last, "content");
        if (last["role"] == "assistant" && content && content->is_string()) r.chat_echo = content->get<std::string>();
    }
    parse_common(j, model, r);
    parse_logprobs(j, r);
    parse_tools(j, model, r);
    parse_vllm_fields(j, model, r);
    r.sampling.top_logprobs = std::max(0, r.logprobs);
    const char* limit = field(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    return choices_of(j, limit, model.context, model, r, {chat_tokens(prompt, model, get_bool(j, "add_special_tokens", false))});
}

std::vector<int32_t> parse_tokenize_request(std::string_view body, const ServedModel& model) {
    const Json j = parse_body(body);
    if (field(j, "messages")) return chat_tokens(render_chat(j, model), model, get_bool(j, "add_special_tokens", false));
    const Json* p = field(j, "prompt");
    if (!p || !p->is_string()) throw ApiError::invalid("'prompt' (a string) or 'messages' is required", "prompt");
    return model.tokenizer->encode(p->get<std::string>(), get_bool(j, "add_special_tokens", true));
}

std::vector<int32_t> parse_detokenize_request(std::string_view body, const ServedModel& model) {
    const Json j = parse_body(body);
    const Json* t = field(j, "tokens");
    if (!t || !t->is_array()) throw ApiError::invalid("'tokens' (an array of token ids) is required", "tokens");
    return token_array(*t, model, "tokens");
}

}  // namespace tps::serve
