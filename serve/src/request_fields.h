// The pieces of request parsing that several files share (request.cpp, output_format.cpp): reading
// one field of a body with its type and range checked, each failure an ApiError naming the field.
#pragma once

#include "tpserve/serve/request.h"

#include <nlohmann/json.hpp>

namespace tps::serve {

using Json = nlohmann::ordered_json;

// A request body: a JSON object (a 400 saying why not; nesting past 64 levels refused unparsed).
Json parse_body(std::string_view body);
// "a string", "an object", ... for messages
const char* type_name(const Json& v);
// The field, or null when it is missing or null
const Json* field(const Json& j, const char* name);
int64_t get_int(const Json& j, const char* name, int64_t lo, int64_t hi, int64_t fallback);
// lo_open: the value must be above lo, not equal to it
float get_float(const Json& j, const char* name, double lo, double hi, float fallback, bool lo_open = false);
bool get_bool(const Json& j, const char* name, bool fallback);
// Token ids a request may name: those both the tokenizer and the model's vocabulary have.
int64_t token_limit(const ServedModel& model);

// Another API's flat tool list ([{type, name, description, <schema_key>, strict}]: the Responses
// API's, Anthropic's) in chat's function form. A tool is the client's to run when its type is
// `client_type`, or absent where `type_optional`; any other is refused, saying `offered`.
Json chat_function_tools(const Json& tools, std::string_view client_type, bool type_optional, const char* schema_key,
                         std::string_view offered);

// response_format, vLLM's guided_json / guided_regex / guided_choice and structured_outputs: the
// request's output format as r.sampling.constraint (at most one of them; "text" is none).
void parse_output_format(const Json& j, const ServedModel& model, GenerationRequest& r);
// tool_choice "required" (`only` empty) or a named function (`only`): the output is forced to be
// [{"name": ..., "parameters": {...}}, ...] over `tools` (checked: each a function with a name),
// each call's parameters valid under its function's schema; a named function gets one call, as
// does r.one_tool_call (parallel_tool_calls false).
void force_tool_calls(const Json& tools, const std::string& only, const ServedModel& model, GenerationRequest& r);
// OpenAI's strict function calling with tool_choice "auto": whether a function asks for it, and
// the grammar that holds every call the model writes to its function's parameters (hermes: each
// call between its tags, the text around free; llama3_json: the answer is calls or text that does
// not open with '{'; other formats: a 400 naming 'tools').
bool any_strict(const Json& tools);
void strict_tool_calls(const Json& tools, const ServedModel& model, GenerationRequest& r);

// vLLM's fields beyond the OpenAI API (vllm_fields.cpp): include_stop_str_in_output,
// return_tokens_as_token_ids, truncate_prompt_tokens, prompt_logprobs, allowed_token_ids and
// bad_words (as a filter beside any output format, so it comes after the tools); the rest of
// vLLM's that would change the answer (use_beam_search, chat_template) a 400; priority is one
// unless the queue is ordered by it (ServedModel::priority_scheduling).
void parse_vllm_fields(const Json& j, const ServedModel& model, GenerationRequest& r);

}  // namespace tps::serve
