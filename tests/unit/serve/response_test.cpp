// The response objects built from engine pieces: tool calls read from chat output (whole and
// streamed, with nothing of a call shown as content), several choices, and an echoed prompt's
// first token without a log-probability.
#include "response_test_support.h"
#include "serve_test_support.h"

#include "tpserve/serve/response.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

namespace tps::serve {
namespace {

using Json = nlohmann::json;

GenerationRequest chat_request(bool tools, int choices = 1) {
    GenerationRequest r;
    r.endpoint = Endpoint::chat;
    r.reads_tool_calls = tools;
    r.n = choices;
    r.choices = choices;
    return r;
}

using test::events;
using test::piece;

const std::vector<std::string> kCallPieces = {"I'll look", " it up.\n<tool", "_call>\n{\"name\": \"get_weather\", ",
                                              "\"arguments\": {\"city\": \"Pa", "ris\"}}\n</tool_call>"};

TEST(Response, ToolCallsInAWholeChatAnswer) {
    ResponseWriter w(chat_request(true), "m", *test::fixture().tokenizer, 1, ToolParser::hermes);
    for (size_t i = 0; i < kCallPieces.size(); ++i) w.add(0, piece(kCallPieces[i], i + 1 == kCallPieces.size() ? "stop" : ""));
    const Json j = Json::parse(w.whole({5, 20, 0}));
    const Json& c = j["choices"][0];
    EXPECT_EQ(c["finish_reason"], "tool_calls");
    EXPECT_EQ(c["message"]["role"], "assistant");
    EXPECT_EQ(c["message"]["content"], "I'll look it up.");  // (blanks before a call are not content)
    ASSERT_EQ(c["message"]["tool_calls"].size(), 1u);
    const Json& call = c["message"]["tool_calls"][0];
    EXPECT_EQ(call["type"], "function");
    EXPECT_FALSE(call.contains("index"));  // only a streamed delta's calls carry one
    EXPECT_TRUE(call["id"].get<std::string>().starts_with("call_"));
    EXPECT_EQ(call["function"]["name"], "get_weather");
    EXPECT_EQ(Json::parse(call["function"]["arguments"].get<std::string>()), (Json{{"city", "Paris"}}));

    // a call and nothing else: content null
    ResponseWriter bare(chat_request(true), "m", *test::fixture().tokenizer, 1, ToolParser::llama3_json);
    bare.add(0, piece("{\"name\": \"f\", \"parameters\": {}}", "stop"));
    const Json b = Json::parse(bare.whole({5, 9, 0}));
    EXPECT_TRUE(b["choices"][0]["message"]["content"].is_null());
    EXPECT_EQ(b["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");
}

TEST(Response, ToolCallsStreamedNeverShowTheCallAsText) {
    ResponseWriter w(chat_request(true), "m", *test::fixture().tokenizer, 1, ToolParser::hermes);
    std::string sse;
    for (size_t i = 0; i < kCallPieces.size(); ++i) sse += w.stream_piece(0, piece(kCallPieces[i], i + 1 == kCallPieces.size() ? "stop" : ""));
    std::string content;
    std::vector<Json> calls;
    std::vector<std::string> finishes;
    for (const Json& e : events(sse)) {
        const Json& c = e["choices"][0];
        if (c["delta"].contains("content")) content += c["delta"]["content"].get<std::string>();
        if (c["delta"].contains("tool_calls")) calls.push_back(c["delta"]["tool_calls"]);
        if (!c["finish_reason"].is_null()) finishes.push_back(c["finish_reason"]);
    }
    EXPECT_EQ(content, "I'll look it up.");
    // the call as it was written: id, type and name with the arguments begun, then the rest of them
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_EQ(calls[0], (Json::array({{{"index", 0}, {"id", calls[0][0]["id"]}, {"type", "function"},
                                        {"function", {{"name", "get_weather"}, {"arguments", "{\"city\": \"Pa"}}}}})));
    EXPECT_EQ(calls[1], (Json::array({{{"index", 0}, {"function", {{"arguments", "ris\"}"}}}}})));
    EXPECT_EQ(finishes, std::vector<std::string>{"tool_calls"});
    EXPECT_EQ(sse.find("tool_call>"), std::string::npos);

    // no call after all: everything held back comes out as text, with the finish it had
    ResponseWriter plain(chat_request(true), "m", *test::fixture().tokenizer, 1, ToolParser::hermes);
    std::string text;
    std::string finish;
    for (const auto& [t, f] : std::vector<std::pair<std::string, std::string>>{{"a <", ""}, {"tool is fine", ""}, {" <", "length"}}) {
        for (const Json& e : events(plain.stream_piece(0, piece(t, f)))) {
            const Json& c = e["choices"][0];
            if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
            if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
        }
    }
    EXPECT_EQ(text, "a <tool is fine <");
    EXPECT_EQ(finish, "length");

    // without tools in the request, a call's text is only text
    ResponseWriter off(chat_request(false), "m", *test::fixture().tokenizer, 1, ToolParser::hermes);
    for (const auto& p : kCallPieces) off.add(0, piece(p));
    off.add(0, piece("", "stop"));
    const Json o = Json::parse(off.whole({1, 1, 0}));
    EXPECT_FALSE(o["choices"][0]["message"].contains("tool_calls"));
    EXPECT_EQ(o["choices"][0]["finish_reason"], "stop");
}

// Forced calls (tool_choice "required" or named): the output is the grammar's list, answered as
// tool_calls whatever the model's own format; a Mistral model's calls keep its 9-character ids.
// A call cut by max_tokens: OpenAI's answer, a call whose arguments end where the output did and
// finish_reason "length", streamed or whole.
TEST(Response, ACallCutShortKeepsItsFinish) {
    const std::vector<std::string> cut = {"<tool_call>{\"name\": \"f\", ", "\"arguments\": {\"q\": \"wea"};
    ResponseWriter streamed(chat_request(true), "m", *test::fixture().tokenizer, 1, ToolParser::hermes);
    std::string args, finish;
    for (size_t i = 0; i < cut.size(); ++i) {
        for (const Json& e : events(streamed.stream_piece(0, piece(cut[i], i + 1 == cut.size() ? "length" : "")))) {
            const Json& c = e["choices"][0];
            if (c["delta"].contains("tool_calls")) args += c["delta"]["tool_calls"][0]["function"]["arguments"].get<std::string>();
            if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
        }
    }
    EXPECT_EQ(args, "{\"q\": \"wea");
    EXPECT_EQ(finish, "length");
    ResponseWriter whole(chat_request(true), "m", *test::fixture().tokenizer, 1, ToolParser::hermes);
    whole.add(0, piece(cut[0] + cut[1], "length"));
    const Json j = Json::parse(whole.whole({1, 2, 0}));
    const Json& c = j["choices"][0];
    EXPECT_EQ(c["finish_reason"], "length");
    EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["arguments"], args);
}

TEST(Response, ForcedCallsAreTheWholeList) {
    GenerationRequest r = chat_request(false);
    r.forces_tool_calls = true;
    const std::string list = R"([{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "f", "parameters": {}}])";
    for (const ToolParser model : {ToolParser::none, ToolParser::hermes, ToolParser::mistral}) {
        ResponseWriter w(r, "m", *test::fixture().tokenizer, 1, model);
        w.add(0, piece(list.substr(0, 20)));
        w.add(0, piece(list.substr(20), "stop"));
        const Json j = Json::parse(w.whole({5, 20, 0}));
        const Json& c = j["choices"][0];
        EXPECT_EQ(c["finish_reason"], "tool_calls");
        EXPECT_TRUE(c["message"]["content"].is_null());
        ASSERT_EQ(c["message"]["tool_calls"].size(), 2u);
        EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["name"], "get_weather");
        EXPECT_EQ(Json::parse(c["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>()), (Json{{"city", "Oslo"}}));
        EXPECT_EQ(c["message"]["tool_calls"][1]["function"]["arguments"], "{}");
        const std::string id = c["message"]["tool_calls"][0]["id"];
        EXPECT_EQ(model == ToolParser::mistral ? id.size() == 9 : id.starts_with("call_"), true) << id;

        // streamed: nothing shown as content, the calls at the end
        ResponseWriter s(r, "m", *test::fixture().tokenizer, 1, model);
        std::string sse = s.stream_piece(0, piece(list.substr(0, 30)));
        EXPECT_TRUE(sse.empty());
        sse += s.stream_piece(0, piece(list.substr(30), "stop"));
        std::vector<std::string> finishes;
        int calls = 0;
        for (const Json& e : events(sse)) {
            const Json& ch = e["choices"][0];
            EXPECT_FALSE(ch["delta"].contains("content") && !ch["delta"]["content"].get<std::string>().empty());
            if (ch["delta"].contains("tool_calls")) calls += static_cast<int>(ch["delta"]["tool_calls"].size());
            if (!ch["finish_reason"].is_null()) finishes.push_back(ch["finish_reason"]);
        }
        EXPECT_EQ(calls, 2);
        EXPECT_EQ(finishes, std::vector<std::string>{"tool_calls"});
    }
}

TEST(Response, SeveralChoicesAndUsage) {
    ResponseWriter w(chat_request(false, 2), "m", *test::fixture().tokenizer, 1);
    EXPECT_EQ(events(w.stream_start()).size(), 2u);  // a role chunk per choice
    w.add(1, piece("second", "length"));
    w.add(0, piece("first", "stop"));
    const Json j = Json::parse(w.whole({7, 3, 4}));
    ASSERT_EQ(j["choices"].size(), 2u);
    EXPECT_EQ(j["choices"][0]["index"], 0);
    EXPECT_EQ(j["choices"][0]["message"]["content"], "first");
    EXPECT_EQ(j["choices"][1]["message"]["content"], "second");
    EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
    EXPECT_EQ(j["usage"]["total_tokens"], 10);
    EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

TEST(Response, ContinuousUsageStatsPutUsageInEveryChunk) {
    GenerationRequest r = chat_request(false, 2);
    r.prompt = {1, 2, 3, 4, 5, 6, 7};
    r.stream = true;
    r.include_usage = true;
    r.continuous_usage = true;
    ResponseWriter w(r, "m", *test::fixture().tokenizer, 1);
    for (const Json& e : events(w.stream_start())) {
        EXPECT_EQ(e["usage"], (Json{{"prompt_tokens", 7}, {"completion_tokens", 0}, {"total_tokens", 7}})) << e;
    }
    Delta d = piece("ab", "");
    d.prompt_tokens = 7;
    d.completion_tokens = 2;
    const auto first = events(w.stream_piece(1, d));
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0]["choices"][0]["index"], 1);
    EXPECT_EQ(first[0]["usage"], (Json{{"prompt_tokens", 7}, {"completion_tokens", 2}, {"total_tokens", 9}}));
    d = piece("c", "stop");
    d.prompt_tokens = 7;
    d.completion_tokens = 4;
    const auto last = events(w.stream_piece(1, d));
    ASSERT_EQ(last.size(), 1u);
    EXPECT_EQ(last[0]["usage"]["completion_tokens"], 4);
    // the last chunk still gives the whole request's usage, with nothing else
    const auto end = events(w.stream_end({7, 9, 0}));
    ASSERT_EQ(end.size(), 1u);
    EXPECT_EQ(end[0]["usage"]["completion_tokens"], 9);
    EXPECT_TRUE(end[0]["choices"].empty());

    r.continuous_usage = false;  // include_usage alone: no usage before the end
    ResponseWriter once(r, "m", *test::fixture().tokenizer, 1);
    for (const Json& e : events(once.stream_start() + once.stream_piece(0, piece("x", "stop")))) {
        EXPECT_FALSE(e.contains("usage")) << e;
    }
}

// vLLM's prompt_logprobs: [null, {id: {logprob, rank, decoded_token}, ...}, ...], the prompt's token
// first (its own rank), then the alternatives by place; in each completions choice, chat's at the top.
TEST(Response, PromptLogprobsInVllmsShape) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    auto text = [&](int32_t t) {
        const int32_t one[] = {t};
        return tok.decode(one, false);
    };
    Delta d;
    d.prompt_logprobs = {TokenOut{81, std::nanf(""), {}},
                         TokenOut{82, -2.5f, {{90, -0.5f}, {82, -2.5f}}, 2},
                         TokenOut{83, -0.25f, {{83, -0.25f}, {91, -3.0f}}, 1},
                         TokenOut{84, -std::numeric_limits<float>::infinity(), {{92, -0.1f}, {93, -4.0f}}, 500}};
    const Json want = Json::array(
        {nullptr,
         {{"82", {{"logprob", -2.5}, {"rank", 2}, {"decoded_token", text(82)}}},
          {"90", {{"logprob", -0.5}, {"rank", 1}, {"decoded_token", text(90)}}}},
         {{"83", {{"logprob", -0.25}, {"rank", 1}, {"decoded_token", text(83)}}},
          {"91", {{"logprob", -3.0}, {"rank", 2}, {"decoded_token", text(91)}}}},
         {{"84", {{"logprob", -9999.0}, {"rank", 500}, {"decoded_token", text(84)}}},
          {"92", {{"logprob", -0.1f}, {"rank", 1}, {"decoded_token", text(92)}}},
          {"93", {{"logprob", -4.0}, {"rank", 2}, {"decoded_token", text(93)}}}}});
    GenerationRequest r;
    r.endpoint = Endpoint::completions;
    r.prompt_logprobs = 2;
    r.n = r.choices = 2;
    ResponseWriter w(r, "m", tok, 1);
    w.add(0, d);
    w.add(1, d);
    w.add(0, piece("x", "length"));
    w.add(1, piece("y", "length"));
    const Json j = Json::parse(w.whole({4, 2, 0}));
    for (const Json& c : j["choices"]) {
        EXPECT_EQ(c["prompt_logprobs"], want) << c;
        EXPECT_TRUE(c["logprobs"].is_null());
    }
    EXPECT_EQ(j["choices"][0]["text"], "x");
    // (the dump keeps the keys in the order made: the prompt's token first)
    EXPECT_LT(w.whole({4, 2, 0}).find("\"84\""), w.whole({4, 2, 0}).find("\"92\""));

    r.endpoint = Endpoint::chat;
    r.n = r.choices = 1;
    ResponseWriter chat(r, "m", tok, 1);
    chat.add(0, d);
    chat.add(0, piece("x", "stop"));
    const Json cj = Json::parse(chat.whole({4, 1, 0}));
    EXPECT_EQ(cj["prompt_logprobs"], want);
    EXPECT_FALSE(cj["choices"][0].contains("prompt_logprobs"));

    GenerationRequest plain;
    ResponseWriter none(plain, "m", tok, 1);
    none.add(0, piece("x", "stop"));
    EXPECT_FALSE(Json::parse(none.whole({1, 1, 0}))["choices"][0].contains("prompt_logprobs"));
}

TEST(Response, AnEchoedPromptsFirstTokenHasNoLogprob) {
    GenerationRequest r;
    r.endpoint = Endpoint::completions;
    r.logprobs = 1;
    r.echo = true;
    ResponseWriter w(r, "m", *test::fixture().tokenizer, 1);
    Delta d = piece("ab", "length");
    d.tokens = {TokenOut{81, std::nanf(""), {}}, TokenOut{82, -1.5f, {{82, -1.5f}}}};
    w.add(0, d);
    const Json lp = Json::parse(w.whole({2, 0, 0}))["choices"][0]["logprobs"];
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
    EXPECT_TRUE(lp["top_logprobs"][0].is_null());
    EXPECT_FLOAT_EQ(lp["token_logprobs"][1].get<float>(), -1.5f);
    EXPECT_EQ(lp["text_offset"], (Json{0, 1}));
}

}  // namespace
}  // namespace tps::serve
