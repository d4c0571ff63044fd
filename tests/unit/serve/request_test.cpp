// Request parsing: every field lands where it should, defaults are the reference API's (or the
// model's generation_config.json over them), and each bad body is a 400 / 404 naming the field
// (never an exception of another kind).
#include "serve_test_support.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace tps::serve {
namespace {

using test::served;

ApiError refusal(std::string_view body, Endpoint e = Endpoint::completions, int64_t context = 256) {
    const ServedModel m = served(context);
    try {
        if (e == Endpoint::chat) parse_chat_request(body, m);
        else parse_completion_request(body, m);
    } catch (const ApiError& err) {
        return err;
    }
    ADD_FAILURE() << "accepted: " << body;
    return ApiError(0, "", "");
}

// A request of one choice: that choice.
GenerationRequest completion(std::string_view body, const ServedModel& m) {
    std::vector<GenerationRequest> c = parse_completion_request(body, m);
    EXPECT_EQ(c.size(), 1u) << body;
    return c.at(0);
}
GenerationRequest chat(std::string_view body, const ServedModel& m) {
    std::vector<GenerationRequest> c = parse_chat_request(body, m);
    EXPECT_EQ(c.size(), 1u) << body;
    return c.at(0);
}

TEST(Request, CompletionFieldsAndDefaults) {
    const ServedModel m = served();
    const GenerationRequest r = completion(
        R"({"model":"smollm2","prompt":"Hello world","max_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":5,
            "min_p":0.1,"presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.1,"seed":42,
            "stop":["\n","END"],"stream":true,"stream_options":{"include_usage":true},"logprobs":3,"user":"u",
            "some_future_field":{"x":1}})",
        m);
    EXPECT_EQ(r.prompt, m.tokenizer->encode("Hello world", true));
    EXPECT_EQ(r.max_tokens, 7);
    EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
    EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
    EXPECT_EQ(r.sampling.top_k, 5);
    EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
    EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
    EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
    EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.1f);
    EXPECT_EQ(r.sampling.seed, 42u);
    EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
    EXPECT_EQ(r.stop_ids, m.stop_ids);
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.include_usage);
    EXPECT_EQ(r.logprobs, 3);
    EXPECT_EQ(r.sampling.top_logprobs, 3);

    const GenerationRequest d = completion(R"({"prompt":[1,2,3],"ignore_eos":true})", m);
    EXPECT_EQ(d.prompt, (std::vector<int32_t>{1, 2, 3}));
    EXPECT_EQ(d.max_tokens, 16);  // the reference API's default
    EXPECT_FLOAT_EQ(d.sampling.temperature, 1.0f);
    EXPECT_TRUE(d.stop_ids.empty());
    EXPECT_TRUE(d.skip_special_tokens);
    // stop_token_ids add to the model's stop tokens, and survive ignore_eos
    const GenerationRequest st = completion(R"({"prompt":"a","stop_token_ids":[5,6]})", m);
    std::vector<int32_t> want = m.stop_ids;
    want.insert(want.end(), {5, 6});
    EXPECT_EQ(st.stop_ids, want);
    EXPECT_EQ(completion(R"({"prompt":"a","ignore_eos":true,"stop_token_ids":[5]})", m).stop_ids,
              std::vector<int32_t>{5});
    EXPECT_EQ(completion(R"({"prompt":"a","response_format":{"type":"text"}})", m).sampling.constraint, nullptr);
    // min_tokens holds back the stop tokens the request ends on
    const GenerationRequest mt = completion(R"({"prompt":"a","min_tokens":3,"stop_token_ids":[5]})", m);
    EXPECT_EQ(mt.sampling.min_tokens, 3);
    EXPECT_EQ(mt.sampling.hold, mt.stop_ids);
    EXPECT_TRUE(completion(R"({"prompt":"a","min_tokens":3,"ignore_eos":true})", m).sampling.hold.empty());
    EXPECT_FALSE(completion(R"({"prompt":"a","skip_special_tokens":false})", m).skip_special_tokens);
    EXPECT_THROW(completion(R"({"prompt":"a","skip_special_tokens":"no"})", m), ApiError);
    EXPECT_EQ(d.logprobs, -1);
    EXPECT_FALSE(d.stream);
    // no seed: each request its own
    EXPECT_NE(completion(R"({"prompt":"a"})", m).sampling.seed,
              completion(R"({"prompt":"a"})", m).sampling.seed);
}

// Each way of asking for an output format gives the sampler a constraint that follows it: the
// first token may only start the format's text.
TEST(Request, OutputFormatsBecomeConstraints) {
    const ServedModel m = served();
    auto first_allowed = [&](const std::string& body) {
        const GenerationRequest r = completion(body, m);
        EXPECT_NE(r.sampling.constraint, nullptr) << body;
        if (!r.sampling.constraint) return std::string();
        auto c = r.sampling.constraint->restart();
        const std::vector<uint64_t>& mask = c->allowed();
        std::string firsts;  // the distinct first bytes of the allowed tokens
        for (int32_t t = 0; t < m.tokenizer->vocab_size(); ++t) {
            if (!mask_has(mask, t)) continue;
            const std::string b = m.tokenizer->token_bytes(t).value_or("?");
            if (firsts.find(b[0]) == std::string::npos) firsts += b[0];
        }
        std::sort(firsts.begin(), firsts.end());
        return firsts;
    };
    EXPECT_EQ(first_allowed(R"({"prompt":"a","response_format":{"type":"json_object"}})"), "{");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","response_format":{"type":"json_schema","json_schema":{"name":"n",
        "schema":{"type":"array"}}}})"), "[");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","guided_json":"{\"type\":\"string\"}"})"), "\"");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","guided_regex":"[0-9]+"})"), "0123456789");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","guided_choice":["yes","no"]})"), "ny");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","structured_outputs":{"choice":["b","c"]}})"), "bc");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","structured_outputs":{"json_object":true}})"), "{");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","guided_grammar":"root ::= (\"x\" | digit) digit*\ndigit ::= [3-5]"})"), "345x");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","structured_outputs":{"grammar":"root ::= [qz] \"!\""}})"), "qz");
    // structural tags (xgrammar's format, vLLM's older shape, and structured_outputs' JSON text or object)
    EXPECT_EQ(first_allowed(R"({"prompt":"a","response_format":{"type":"structural_tag","format":{"type":"triggered_tags",
        "triggers":["<f"],"tags":[{"begin":"<f>","content":{"type":"json_schema","json_schema":{"type":"integer"}},"end":"</f>"}],
        "at_least_one":true}}})"), "<");
    const std::string free_text = first_allowed(R"({"prompt":"a","response_format":{"type":"structural_tag","structures":[
        {"begin":"[c]","schema":{"type":"object"},"end":"[/c]"}],"triggers":["[c"]}})");
    EXPECT_NE(free_text.find('['), std::string::npos) << free_text;  // (text, or the trigger)
    EXPECT_NE(free_text.find('a'), std::string::npos) << free_text;
    EXPECT_EQ(first_allowed(R"({"prompt":"a","structured_outputs":{"structural_tag":
        "{\"format\": {\"type\": \"const_string\", \"value\": \"ok\"}}"}})"), "o");
    EXPECT_EQ(first_allowed(R"({"prompt":"a","structured_outputs":{"structural_tag":{"format":{"type":"or","elements":[
        {"type":"const_string","value":"yes"},{"type":"regex","pattern":"[0-2]+"}]}}}})"), "012y");
    EXPECT_EQ(completion(R"({"prompt":"a","structured_outputs":{"json_object":false}})", m).sampling.constraint, nullptr);
    // the choices of one request share the compiled format
    const auto four = parse_completion_request(R"({"prompt":"a","n":4,"guided_choice":["x"]})", m);
    EXPECT_EQ(four[0].sampling.constraint, four[3].sampling.constraint);
}

TEST(Request, ChoicesAreNPerPromptEachWithItsOwnSeed) {
    const ServedModel m = served(20);
    const auto three = parse_completion_request(R"({"prompt":"Hello","n":3,"seed":7,"max_tokens":5,"best_of":3})", m);
    ASSERT_EQ(three.size(), 3u);
    for (int i = 0; i < 3; ++i) {
        const GenerationRequest& c = three[static_cast<size_t>(i)];
        EXPECT_EQ(c.index, i);
        EXPECT_EQ(c.n, 3);
        EXPECT_EQ(c.choices, 3);
        EXPECT_EQ(c.sampling.seed, 7u + static_cast<uint64_t>(i));  // the first is what n = 1 would give
        EXPECT_EQ(c.prompt, m.tokenizer->encode("Hello", true));
        EXPECT_EQ(c.max_tokens, 5);
        EXPECT_EQ(c.counts_prompt(), i == 0);
    }
    // several prompts: n each, in order; a default max_tokens is cut to each prompt's room
    const std::vector<int32_t> fifteen = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const auto four = parse_completion_request(R"({"prompt":["a",[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]],"n":2,"seed":-1})", m);
    ASSERT_EQ(four.size(), 4u);
    const std::vector<int32_t> a = m.tokenizer->encode("a", true);
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(four[i].index, static_cast<int>(i));
        EXPECT_EQ(four[i].choices, 4);
        EXPECT_EQ(four[i].prompt, i < 2 ? a : fifteen);
        EXPECT_EQ(four[i].max_tokens, i < 2 ? 16 : 5);
        EXPECT_EQ(four[i].counts_prompt(), i % 2 == 0);
        EXPECT_EQ(four[i].sampling.seed, static_cast<uint64_t>(-1) + i % 2);  // (wraps: -1 + 1 is 0)
    }
    // chat: n choices of the one conversation
    const auto two = parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],"n":2,"max_tokens":2})", served());
    ASSERT_EQ(two.size(), 2u);
    EXPECT_EQ(two[0].prompt, two[1].prompt);
    EXPECT_EQ(two[1].index, 1);
}

TEST(Request, EchoScoresThePromptAndMayGenerateNothing) {
    const ServedModel m = served();
    const GenerationRequest e = completion(R"({"prompt":[5,6,7],"echo":true,"logprobs":2,"max_tokens":0})", m);
    EXPECT_TRUE(e.echo);
    EXPECT_TRUE(e.scores_prompt());
    EXPECT_EQ(e.max_tokens, 0);
    EXPECT_FALSE(completion(R"({"prompt":"a","echo":true})", m).scores_prompt());  // the text only
    EXPECT_FALSE(completion(R"({"prompt":"a","logprobs":1})", m).scores_prompt());
    EXPECT_EQ(refusal(R"({"prompt":"a","max_tokens":0})").param(), "max_tokens");  // 0 only with echo
}

TEST(Request, ToolsAreCheckedAndReadWhenTheModelsFormatIsKnown) {
    ServedModel m = served();
    const std::string tools = R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}])";
    const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
    auto body = [&](const std::string& more) { return "{" + msgs + "," + tools + more + "}"; };
    EXPECT_FALSE(chat(body(""), m).reads_tool_calls);  // the smollm2 fixture's template has no tool syntax
    m.tool_parser = ToolParser::hermes;
    EXPECT_TRUE(chat(body(""), m).reads_tool_calls);
    EXPECT_TRUE(chat(body(R"(,"tool_choice":"auto","parallel_tool_calls":true)"), m).reads_tool_calls);
    EXPECT_FALSE(chat(body(R"(,"tool_choice":"none")"), m).reads_tool_calls);
    EXPECT_FALSE(chat("{" + msgs + "}", m).reads_tool_calls);
    EXPECT_FALSE(chat("{" + msgs + R"(,"tools":[]})", m).reads_tool_calls);
    auto refused = [&](const std::string& b, const char* says) {
        try {
            (void)parse_chat_request(b, m);
            ADD_FAILURE() << "accepted: " << b;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.status(), 400) << b;
            EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
        }
    };
    refused(body(R"(,"tool_choice":"sometimes")"), "must be \"auto\", \"none\", \"required\" or a function");
    refused(body(R"(,"tool_choice":{"type":"function","function":{"name":"get_time"}})"), "'get_time', which is not among");
    refused(body(R"(,"tool_choice":{"type":"function"})"), "'tool_choice' must be");
    refused("{" + msgs + R"(,"tool_choice":"required"})", "needs 'tools'");
    refused(body(R"(,"tool_choice":"required","response_format":{"type":"json_object"})"), "cannot go together");
    const std::string unenforceable = "{" + msgs + R"(,"tool_choice":"required","tools":[{"type":"function","function":{"name":"f",
            "parameters":{"type":"object","properties":{"n":{"type":"integer","multipleOf":3}}}}}]})";
    refused(unenforceable, "cannot be enforced: JSON schema: 'multipleOf'");
    // a text spelled token by token through a request's grammar: taken whole, and whether the output
    // may end there (a stop token allowed) and must (nothing may follow)
    struct Spelled {
        bool taken = true, may_end = false, finished = false;
    };
    auto spell = [](const GenerationRequest& r, const ServedModel& on, const std::string& text) {
        Spelled out;
        auto c = r.sampling.constraint->restart();
        for (const int32_t t : on.tokenizer->encode(text, false)) {
            if (!mask_has(c->allowed(), t)) return Spelled{false, false, false};
            c->accept(t);
        }
        out.finished = c->finished();
        out.may_end = out.finished || mask_has(c->allowed(), on.stop_ids.at(0));
        return out;
    };
    // forcing calls on a model whose format is known (hermes here): its own format, which it was
    // trained to write; the output is calls and nothing else, read back by its parser
    const std::string oslo = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
    const GenerationRequest required = chat(body(R"(,"tool_choice":"required")"), m);
    EXPECT_FALSE(required.forces_tool_calls);
    EXPECT_TRUE(required.reads_tool_calls);
    ASSERT_NE(required.sampling.constraint, nullptr);
    EXPECT_TRUE(spell(required, m, oslo).may_end);
    EXPECT_FALSE(spell(required, m, oslo).finished);  // (more calls may follow)
    EXPECT_TRUE(spell(required, m, oslo + "\n" + oslo).may_end);
    EXPECT_FALSE(spell(required, m, "<tool_call>\n").may_end);
    EXPECT_FALSE(spell(required, m, "Sure. " + oslo).taken);  // no text
    EXPECT_FALSE(spell(required, m, oslo + " Done.").taken);
    EXPECT_FALSE(spell(required, m, "<tool_call>\n{\"name\": \"get_time\"").taken);
    EXPECT_FALSE(spell(required, m, R"([{"name": "get_weather", "parameters": {}}])").taken);
    const GenerationRequest named = chat(body(R"(,"tool_choice":{"type":"function","function":{"name":"get_weather"}})"), m);
    EXPECT_TRUE(named.reads_tool_calls);
    EXPECT_TRUE(spell(named, m, oslo).finished);  // one call, and nothing may follow
    EXPECT_TRUE(spell(chat(body(R"(,"tool_choice":"required","parallel_tool_calls":false)"), m), m, oslo).finished);
    ServedModel llama = m;
    llama.tool_parser = ToolParser::llama3_json;
    const GenerationRequest llama_required = chat(body(R"(,"tool_choice":"required")"), llama);
    EXPECT_TRUE(llama_required.reads_tool_calls);
    const std::string lima = R"({"name": "get_weather", "parameters": {"city": "Lima"}})";
    EXPECT_TRUE(spell(llama_required, llama, lima + "; " + lima).may_end);
    EXPECT_FALSE(spell(llama_required, llama, "The weather").taken);
    EXPECT_FALSE(spell(llama_required, llama, R"({"name": "get_weather", "arguments": {}})").taken);
    // mistral: its own list (with "arguments"), without the [TOOL_CALLS] token; read back by its parser
    ServedModel mistral = m;
    mistral.tool_parser = ToolParser::mistral;
    const GenerationRequest mistral_required = chat(body(R"(,"tool_choice":"required")"), mistral);
    EXPECT_TRUE(mistral_required.reads_tool_calls);
    EXPECT_FALSE(mistral_required.forces_tool_calls);
    const std::string rome = R"({"name": "get_weather", "arguments": {"city": "Rome"}})";
    EXPECT_TRUE(spell(mistral_required, mistral, "[" + rome + ", " + rome + "]").finished);
    EXPECT_FALSE(spell(mistral_required, mistral, "[" + rome).may_end);
    EXPECT_FALSE(spell(mistral_required, mistral, "[]").taken);
    EXPECT_FALSE(spell(mistral_required, mistral, "Sure").taken);
    EXPECT_FALSE(spell(mistral_required, mistral, R"([{"name": "get_weather", "parameters": {}}])").taken);
    const GenerationRequest mistral_one = chat(body(R"(,"tool_choice":{"type":"function","function":{"name":"get_weather"}})"), mistral);
    EXPECT_TRUE(spell(mistral_one, mistral, "[" + rome + "]").finished);
    EXPECT_FALSE(spell(mistral_one, mistral, "[" + rome + ", ").taken);
    const ToolOutput read = parse_tool_calls(ToolParser::mistral, "[" + rome + ", " + rome + "]");
    ASSERT_EQ(read.calls.size(), 2u);
    EXPECT_EQ(read.calls[1].name, "get_weather");
    EXPECT_EQ(read.calls[1].arguments, R"({"city": "Rome"})");
    EXPECT_TRUE(read.content.empty());
    // where calls are read no other way (none): vLLM's JSON list, read as such
    for (const ToolParser other : {ToolParser::none}) {
        ServedModel o = m;
        o.tool_parser = other;
        const GenerationRequest listed = chat(body(R"(,"tool_choice":"required")"), o);
        EXPECT_TRUE(listed.forces_tool_calls);
        EXPECT_FALSE(listed.reads_tool_calls);
        const GenerationRequest one = chat(body(R"(,"tool_choice":{"type":"function","function":{"name":"get_weather"}})"), o);
        EXPECT_TRUE(one.forces_tool_calls);
        EXPECT_TRUE(spell(one, o, R"([{"name": "get_weather", "parameters": {"city": "Oslo"}}])").finished);
        EXPECT_FALSE(spell(one, o, oslo).taken);
        try {
            (void)parse_chat_request(unenforceable, o);
            ADD_FAILURE() << "accepted";
        } catch (const ApiError& e) {
            EXPECT_NE(std::string(e.what()).find("cannot be enforced: JSON schema: 'multipleOf'"), std::string::npos) << e.what();
        }
    }
    EXPECT_FALSE(chat(body(R"(,"tool_choice":"none")"), m).forces_tool_calls);
    refused("{" + msgs + R"(,"tools":{}})", "'tools' must be an array");
    refused("{" + msgs + R"(,"tools":[{"type":"function","function":{}}]})", "'tools[0]' must be");
    refused("{" + msgs + R"(,"tools":[{"type":"retrieval"}]})", "'tools[0]' must be");
    // an earlier turn's call: its arguments (JSON text) must be JSON
    refused(R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,
               "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]})",
            "arguments' is not JSON");
    EXPECT_NO_THROW(chat(R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"",
                             "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}},7]},
                             {"role":"tool","tool_call_id":"c","content":"1"}]})",
                         m));
    // and the template prints them as an object (Qwen2.5's: {"name": ..., "arguments": {...}})
    std::ifstream in(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/chat_templates/qwen2.5-7b-instruct.jinja");
    std::stringstream source;
    source << in.rdbuf();
    const ChatTemplate qwen(source.str(), "qwen2.5-7b-instruct.jinja");
    m.chat_template = &qwen;
    const GenerationRequest turn = chat(R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"",
        "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},
        {"role":"tool","tool_call_id":"c","content":"1"}]})",
                                        m);
    const std::string text = m.tokenizer->decode(turn.prompt, false);
    EXPECT_NE(text.find(R"({"name": "f", "arguments": {"a": 1}})"), std::string::npos) << text;
}

// OpenAI's strict function calling with tool_choice "auto": on a model that writes its calls in
// tags, every call it opens is held to its function's parameters; free text around the calls.
TEST(Request, StrictToolsHoldEveryCallToItsSchema) {
    ServedModel m = served();
    m.tool_parser = ToolParser::hermes;
    const std::string tools = R"("tools":[{"type":"function","function":{"name":"get_weather","strict":true,"parameters":
        {"type":"object","properties":{"city":{"enum":["Oslo","Lima"]}},"required":["city"],"additionalProperties":false}}},
        {"type":"function","function":{"name":"note","parameters":{"type":"object"}}}])";
    auto body = [&](const std::string& more) { return R"({"messages":[{"role":"user","content":"x"}],)" + tools + more + "}"; };
    const GenerationRequest r = chat(body(""), m);
    EXPECT_TRUE(r.reads_tool_calls);
    EXPECT_FALSE(r.forces_tool_calls);
    ASSERT_NE(r.sampling.constraint, nullptr);
    auto walk = [&](const std::string& text) {
        auto c = r.sampling.constraint->restart();
        for (const int32_t t : m.tokenizer->encode(text, false)) {
            if (!mask_has(c->allowed(), t)) return false;
            c->accept(t);
        }
        return true;
    };
    // text, calls to either function (the strict one's arguments as its schema says), text again
    EXPECT_TRUE(walk("Let me see.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n"
                     "<tool_call>\n{\"name\": \"note\", \"arguments\": {\"anything\": [1, 2]}}\n</tool_call> Done."));
    EXPECT_FALSE(walk("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"));  // not in the enum
    EXPECT_FALSE(walk("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\""));    // no such property
    EXPECT_FALSE(walk("<tool_call>\n{\"name\": \"get_time\""));                                  // no such function
    EXPECT_FALSE(walk("<tool_call>\n{\"arguments\""));                                             // the name comes first
    // none asks for it: no grammar; the model's format must be one written in tags
    EXPECT_EQ(chat(R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","strict":false}}]})", m)
                  .sampling.constraint,
              nullptr);
    auto refused = [&](const std::string& b, ServedModel on, const char* says) {
        try {
            (void)parse_chat_request(b, on);
            ADD_FAILURE() << "accepted: " << b;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.param(), "tools") << e.what();
            EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
        }
    };
    ServedModel mistral = m;
    mistral.tool_parser = ToolParser::mistral;
    refused(body(""), mistral, "this model's are read as mistral");
    // llama3_json: the whole answer is calls (with "parameters"), or text that does not open with '{'
    ServedModel llama = m;
    llama.tool_parser = ToolParser::llama3_json;
    const GenerationRequest l = chat(body(""), llama);
    auto walk_llama = [&](const std::string& text, bool end) {
        auto c = l.sampling.constraint->restart();
        for (const int32_t t : llama.tokenizer->encode(text, false)) {
            if (!mask_has(c->allowed(), t)) return false;
            c->accept(t);
        }
        return !end || mask_has(c->allowed(), llama.stop_ids.at(0));
    };
    EXPECT_TRUE(walk_llama(R"({"name": "get_weather", "parameters": {"city": "Lima"}}; {"name": "note", "parameters": {}})", true));
    EXPECT_TRUE(walk_llama("The weather is {fine}.", true));
    EXPECT_FALSE(walk_llama(R"({"name": "get_weather", "parameters": {"city": "Rome"}})", false));
    EXPECT_FALSE(walk_llama(R"({"answer": 42})", false));
    EXPECT_FALSE(walk_llama(R"({"name": "note", "arguments": {}})", false));  // (Llama's key is "parameters")
    // parallel_tool_calls false: the output ends with its one call
    const GenerationRequest one = chat(body(R"(,"parallel_tool_calls":false)"), m);
    auto c = one.sampling.constraint->restart();
    for (const int32_t t : m.tokenizer->encode("Sure.<tool_call>\n{\"name\": \"note\", \"arguments\": {}}\n</tool_call>", false)) {
        ASSERT_TRUE(mask_has(c->allowed(), t)) << t;
        c->accept(t);
    }
    EXPECT_TRUE(c->finished());
    const GenerationRequest one_llama = chat(body(R"(,"parallel_tool_calls":false)"), llama);
    auto cl = one_llama.sampling.constraint->restart();
    bool second = true;
    for (const int32_t t : llama.tokenizer->encode(R"({"name": "note", "parameters": {}}; {"name": "note")", false)) {
        if (!mask_has(cl->allowed(), t)) {
            second = false;
            break;
        }
        cl->accept(t);
    }
    EXPECT_FALSE(second);
    EXPECT_FALSE(walk_llama(R"({"name": "note", "parameters": {"x": 1}} and more)", false));
    refused(body(R"(,"response_format":{"type":"json_object"})"), m, "cannot go together");
    refused(R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","strict":true,
            "parameters":{"type":"object","properties":{"n":{"type":"integer","multipleOf":3}}}}}]})",
            m, "the parameters of 'f' cannot be enforced");
}

// --served-model-name a,b: a request may name the model by any of its names, and says which.
TEST(Request, TheModelAnswersToItsAliases) {
    ServedModel m = served();
    m.aliases = {"tiny"};
    EXPECT_EQ(parse_completion_request(R"({"model":"tiny","prompt":"x"})", m).at(0).model, "tiny");
    EXPECT_EQ(parse_completion_request(R"({"model":"smollm2","prompt":"x"})", m).at(0).model, "smollm2");
    EXPECT_EQ(parse_completion_request(R"({"prompt":"x"})", m).at(0).model, "");
    try {
        parse_completion_request(R"({"model":"tin","prompt":"x"})", m);
        ADD_FAILURE() << "accepted";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status(), 404);
    }
}

TEST(Request, FieldsLeftOutTakeTheModelsSamplingDefaults) {
    // --generation-config auto: a model's generation_config.json (temperature 0.6, top_p 0.9, and
    // transformers' own defaults, which change nothing) sets what a request leaves out
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("gen-config-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path src = fs::path(TPS_SOURCE_DIR) / "tests/fixtures/models/smollm2";
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
        fs::copy_file(src / f, dir / f);
    }
    auto write = [&](const std::string& text) { std::ofstream(dir / "generation_config.json") << text; };
    write(R"({"eos_token_id": 2, "do_sample": true, "temperature": 0.6, "top_p": 0.9, "top_k": 50,
              "repetition_penalty": 1.0})");
    const ModelFiles files = ModelFiles::open(dir);
    const SamplingDefaults& d = files.sampling_defaults;
    EXPECT_EQ(d.describe(), "temperature 0.6, top_p 0.9");
    EXPECT_FALSE(d.top_k.has_value());  // transformers' default 50: not a setting of the model's
    ServedModel m = served();
    m.sampling_defaults = d.over(m.sampling_defaults);
    const GenerationRequest left_out = completion(R"({"prompt":"a"})", m);
    EXPECT_FLOAT_EQ(left_out.sampling.temperature, 0.6f);
    EXPECT_FLOAT_EQ(left_out.sampling.top_p, 0.9f);
    EXPECT_EQ(left_out.sampling.top_k, 0);
    EXPECT_FLOAT_EQ(left_out.sampling.repetition_penalty, 1.0f);
    const GenerationRequest given = completion(R"({"prompt":"a","temperature":0,"top_p":1})", m);
    EXPECT_FLOAT_EQ(given.sampling.temperature, 0.0f);  // the request's own fields win
    EXPECT_FLOAT_EQ(given.sampling.top_p, 1.0f);

    write(R"({"temperature": "warm"})");
    EXPECT_THROW(ModelFiles::open(dir), InputError);  // names the file and field
    write(R"({"top_k": 2.5})");
    EXPECT_THROW(ModelFiles::open(dir), InputError);
    write(R"({"temperature": -1})");
    try {
        (void)ModelFiles::open(dir).sampling_defaults.over({});
        ADD_FAILURE() << "a negative temperature was taken";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("generation_config.json"), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
}

TEST(Request, ChatUsesTheTemplateAndFillsTheContext) {
    const ServedModel m = served();
    const GenerationRequest r = chat(
        R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
            "logprobs":true,"top_logprobs":2})",
        m);
    const nlohmann::json context = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi there"}}}},
                                    {"add_generation_prompt", true},
                                    {"bos_token", m.bos_token},
                                    {"eos_token", m.eos_token}};
    EXPECT_EQ(r.prompt, m.tokenizer->encode(m.chat_template->render(context), false));
    EXPECT_EQ(r.max_tokens, m.context - static_cast<int64_t>(r.prompt.size()));
    EXPECT_EQ(r.logprobs, 2);
    const GenerationRequest c = chat(R"({"messages":[{"role":"user","content":"x"}],"max_completion_tokens":3})", m);
    EXPECT_EQ(c.max_tokens, 3);
}

TEST(Request, BadBodiesNameTheProblem) {
    struct Case {
        const char* body;
        int status;
        const char* mentions;
        Endpoint endpoint = Endpoint::completions;
    };
    const Case cases[] = {
        {"", 400, "not valid JSON"},
        {"{\"prompt\": \"a\"", 400, "not valid JSON"},
        {"[1]", 400, "must be a JSON object"},
        {R"({"prompt":"a","max_tokens":"x"})", 400, "'max_tokens' must be an integer"},
        {R"({"prompt":"a","max_tokens":0})", 400, "'max_tokens' must be between 1"},
        {R"({"prompt":"a","max_tokens":-1})", 400, "'max_tokens'"},
        {R"({"prompt":"a","max_tokens":1e400})", 400, "not valid JSON"},
        {R"({"prompt":"a","max_tokens":99999999999999999999999})", 400, "'max_tokens'"},
        {R"({"prompt":"a","max_tokens":2.5})", 400, "'max_tokens' must be an integer"},
        {R"({"prompt":"a","temperature":"hot"})", 400, "'temperature' must be a number"},
        {R"({"prompt":"a","temperature":-1})", 400, "'temperature'"},
        {R"({"prompt":"a","top_p":0})", 400, "'top_p'"},
        {R"({"prompt":"a","n":0})", 400, "'n' must be between 1 and 128"},
        {R"({"prompt":"a","n":129})", 400, "'n' must be between 1 and 128"},
        {R"({"prompt":"a","n":2,"best_of":3})", 400, "'best_of' above 'n' (2)"},
        {R"({"prompt":"a","n":2,"best_of":1})", 400, "'best_of' (1) must be at least 'n' (2)"},
        {R"({"prompt":["a","b","c"],"n":50})", 400, "3 prompts with 'n' 50 make 150 choices"},
        {R"({"prompt":["a",[1,2],7]})", 400, "'prompt' must hold strings or token-id arrays, got a number"},
        {R"({"prompt":["a",[]]})", 400, "prompt 1: the prompt is empty"},
        {R"({"prompt":["a",[1,100000]]})", 400, "outside the vocabulary"},
        {R"({"prompt":["a","b"],"max_tokens":256})", 400, "prompt 0: This model's maximum context length is 256"},
        {R"({"prompt":"a","stop":[1]})", 400, "'stop' must hold strings"},
        {R"({"prompt":"a","stream":"yes"})", 400, "'stream' must be a boolean"},
        {R"({"prompt":"a","stream_options":{"include_usage":true}})", 400, "only allowed with 'stream'"},
        {R"({"prompt":"a","logprobs":21})", 400, "'logprobs'"},
        {R"({"prompt":"a","model":"gpt-4"})", 404, "does not exist"},
        {R"({"prompt":"a","model":7})", 400, "'model' must be a string"},
        {R"({})", 400, "'prompt' is required"},
        {R"({"prompt":3})", 400, "'prompt' must be a string or an array"},
        {R"({"prompt":[]})", 400, "'prompt' is empty"},
        {R"({"prompt":[1,100000]})", 400, "outside the vocabulary"},
        {R"({"prompt":[-1]})", 400, "outside the vocabulary"},
        {R"({"prompt":"a","max_tokens":300})", 400, "maximum context length is 256"},
        {R"({"messages":[{"role":"user","content":"x"}],"echo":"yes"})", 400, "'echo' must be a boolean", Endpoint::chat},
        {R"({"prompt":"a","echo":"yes"})", 400, "'echo' must be a boolean"},
        {R"({"prompt":"a","echo":true,"max_tokens":-1})", 400, "'max_tokens' must be between 0"},
        {R"({"prompt":"a","logit_bias":[1]})", 400, "'logit_bias' must be an object"},
        {R"({"prompt":"a","stop_token_ids":3})", 400, "'stop_token_ids' must be an array"},
        {R"({"prompt":"a","stop_token_ids":[1,99999999]})", 400, "99999999 is not a token id"},
        {R"({"prompt":"a","stop_token_ids":["1"]})", 400, "\"1\" is not a token id"},
        {R"({"prompt":"a","response_format":{"type":"structural_tag"}})", 400, "'response_format': structural tag: 'format' is required"},
        {R"({"prompt":"a","response_format":{"type":"structural_tag","format":{"type":"tag","begin":"<","content":{"type":"any_text"},
            "end":""}}})", 400, "structural tag: format.content: any_text is open-ended"},
        {R"({"prompt":"a","response_format":"json"})", 400, "must be an object with a string 'type'"},
        {R"({"prompt":"a","response_format":{"type":"json_schema"}})", 400, "needs a 'json_schema' object"},
        {R"({"prompt":"a","response_format":{"type":"json_schema","json_schema":{"name":"x"}}})", 400, "needs its 'schema'"},
        {R"({"prompt":"a","response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"integer","multipleOf":2}}}})",
         400, "'response_format': JSON schema: 'multipleOf' at # is not supported"},
        {R"({"prompt":"a","guided_json":"{nope"})", 400, "'guided_json': JSON schema: not JSON"},
        {R"({"prompt":"a","guided_json":3})", 400, "'guided_json' must be a JSON schema"},
        {R"({"prompt":"a","guided_regex":"a(b"})", 400, "'guided_regex':"},
        {R"x({"prompt":"a","guided_regex":"(?=a)"})x", 400, "'guided_regex':"},
        {R"({"prompt":"a","guided_choice":[]})", 400, "'guided_choice' must be a non-empty array"},
        {R"({"prompt":"a","guided_choice":["a",1]})", 400, "'guided_choice' must hold strings"},
        {R"({"prompt":"a","guided_grammar":"root ::= x"})", 400, "'guided_grammar': GBNF: line 1, column 10: the rule 'x' is used but never defined"},
        {R"({"prompt":"a","guided_grammar":"start ::= \"a\""})", 400, "'guided_grammar': GBNF: the grammar defines no rule 'root'"},
        {R"({"prompt":"a","guided_grammar":"root ::= e\ne ::= e \"+\" | \"1\""})", 400, "'guided_grammar': GBNF: the rule 'e' is left-recursive"},
        {R"({"prompt":"a","guided_grammar":{"root":"a"}})", 400, "'guided_grammar' must be a string, got an object"},
        {R"({"prompt":"a","guided_whitespace_pattern":" *"})", 400, "'guided_whitespace_pattern' is not supported"},
        {R"({"prompt":"a","guided_choice":["a"],"guided_regex":"b"})", 400, "both ask for an output format"},
        {R"({"prompt":"a","response_format":{"type":"json_object"},"structured_outputs":{"regex":"b"}})", 400,
         "'response_format' and 'structured_outputs.regex' both"},
        {R"({"prompt":"a","structured_outputs":{"grammar":"root ::= [b-a]"}})", 400,
         "'structured_outputs.grammar': GBNF: line 1, column 11: the range 'b-a' is the wrong way round"},
        {R"({"prompt":"a","structured_outputs":{"structural_tag":"{}"}})", 400, "'structured_outputs.structural_tag': structural tag: 'format'"},
        {R"({"prompt":"a","structured_outputs":{"structural_tag":"{"}})", 400, "structural tag: not valid JSON"},
        {R"({"prompt":"a","structured_outputs":{"structural_tag":7}})", 400, "a structural tag object or its JSON text, got a number"},
        {R"({"prompt":"a","structured_outputs":{"jsn":{}}})", 400, "'structured_outputs.jsn' is not a field"},
        {R"({"prompt":"a","structured_outputs":[1]})", 400, "'structured_outputs' must be an object"},
        {R"({"prompt":"a","logit_bias":{"x":1}})", 400, "'x' is not a token id"},
        {R"({"prompt":"a","logit_bias":{"-3":1}})", 400, "'-3' is not a token id"},
        {R"({"prompt":"a","logit_bias":{"99999999":1}})", 400, "'99999999' is not a token id of this model"},
        {R"({"prompt":"a","logit_bias":{"5":101}})", 400, "must be a number in [-100, 100], got 101"},
        {R"({"prompt":"a","logit_bias":{"5":"up"}})", 400, "got \"up\""},
        {R"({"prompt":"a","logit_bias":{"1":5,"01":-5}})", 400, "'01' is not a token id"},
        {R"({"prompt":"a","repetition_penalty":50})", 400, "'repetition_penalty'"},
        {R"({"prompt":"a","max_tokens":4,"min_tokens":5})", 400, "'min_tokens' 5 is more than the 4"},
        {R"({"prompt":"a","min_tokens":-1})", 400, "'min_tokens'"},
        {R"({"messages":3})", 400, "'messages' must be an array", Endpoint::chat},
        {R"({"messages":[]})", 400, "'messages' is empty", Endpoint::chat},
        {R"({"messages":[{"content":"x"}]})", 400, "role", Endpoint::chat},
        {R"({"messages":[{"role":"user","content":7}]})", 400, "content", Endpoint::chat},
        {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", 400, "not supported", Endpoint::chat},
        {R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", 400, "needs 'logprobs'", Endpoint::chat},
    };
    for (const auto& c : cases) {
        const ApiError e = refusal(c.body, c.endpoint);
        EXPECT_EQ(e.status(), c.status) << c.body;
        EXPECT_NE(std::string(e.what()).find(c.mentions), std::string::npos) << c.body << " -> " << e.what();
        const auto body = nlohmann::json::parse(e.body());
        EXPECT_EQ(body["error"]["message"], e.what());
        EXPECT_FALSE(body["error"]["type"].get<std::string>().empty());
    }
}

// Ids the tokenizer has but the model's vocabulary lacks (added tokens past the LM head) are a
// 400 wherever a request names or makes them, never an error in the engine.
TEST(Request, TokenIdsMustBeInTheModelsVocabularyToo) {
    ServedModel m = test::served();
    m.vocab = 100;
    for (const char* body : {R"({"prompt":[5,150]})", R"({"prompt":"a","logit_bias":{"150":1}})",
                             R"({"prompt":"a","stop_token_ids":[150]})", R"({"prompt":"hello world, every word of it"})"}) {
        try {
            (void)completion(body, m);
            ADD_FAILURE() << body;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.status(), 400) << body;
            const std::string what = e.what();
            EXPECT_TRUE(what.find("of 100") != std::string::npos || what.find("0 to 99") != std::string::npos)
                << body << " -> " << what;
        }
    }
    EXPECT_NO_THROW(completion(R"({"prompt":[5,99],"logit_bias":{"99":-100}})", m));
    // a bias list is capped, as OpenAI's
    std::string many = R"({"prompt":"a","logit_bias":{)";
    for (int i = 0; i <= static_cast<int>(kMaxLogitBias); ++i) {
        if (i > 0) many += ',';
        many += fmt::format("\"{}\":1", i);
    }
    many += "}}";
    EXPECT_THROW(completion(many, test::served()), ApiError);
}

TEST(Request, StopStringsAreShortAndBoundedInNumber) {
    const std::string body = R"({"prompt":"a","stop":")" + std::string(kMaxStopBytes + 1, 'x') + R"("})";
    const ApiError e = refusal(body);
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("at most 512 bytes"), std::string::npos) << e.what();
    const std::string fits = R"({"prompt":"a","stop":")" + std::string(kMaxStopBytes, 'x') + R"("})";
    EXPECT_NO_THROW(completion(fits, served()));
    // as many as vLLM users send (OpenAI's limit is 4), within a bound
    auto strings = [](size_t n) {
        nlohmann::json b = {{"prompt", "a"}, {"stop", nlohmann::json::array()}};
        for (size_t i = 0; i < n; ++i) b["stop"].push_back(fmt::format("end{}", i));
        return b.dump();
    };
    EXPECT_EQ(completion(strings(kMaxStopStrings), served()).stop.size(), kMaxStopStrings);
    const ApiError many = refusal(strings(kMaxStopStrings + 1));
    EXPECT_EQ(many.param(), "stop");
    EXPECT_NE(std::string(many.what()).find("at most 64 strings, got 65"), std::string::npos) << many.what();
}

TEST(Request, ThePromptMustLeaveRoomToGenerate) {
    std::string long_prompt;
    for (int i = 0; i < 400; ++i) long_prompt += "word ";
    const ApiError e = refusal(nlohmann::json{{"prompt", long_prompt}}.dump());
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("maximum context length is 256"), std::string::npos) << e.what();
}

TEST(Request, DeepNestingIsRefusedBeforeParsing) {
    const std::string deep(100000, '[');
    EXPECT_EQ(refusal(deep).status(), 400);
    EXPECT_NE(std::string(refusal(deep).what()).find("nests more than"), std::string::npos);
    // brackets inside strings do not count
    const std::string in_string = R"({"prompt":")" + std::string(1000, '[') + R"(","max_tokens":1})";
    EXPECT_NO_THROW(completion(in_string, served(4096)));
}

TEST(Request, TokenizeAndDetokenize) {
    const ServedModel m = served();
    EXPECT_EQ(parse_tokenize_request(R"({"prompt":"Hello"})", m), m.tokenizer->encode("Hello", true));
    EXPECT_EQ(parse_tokenize_request(R"({"prompt":"Hello","add_special_tokens":false})", m), m.tokenizer->encode("Hello", false));
    EXPECT_EQ(parse_detokenize_request(R"({"tokens":[5,6]})", m), (std::vector<int32_t>{5, 6}));
    EXPECT_THROW(parse_detokenize_request(R"({"tokens":"x"})", m), ApiError);
    EXPECT_THROW(parse_tokenize_request(R"({})", m), ApiError);
}

}  // namespace
}  // namespace tps::serve
