// Anthropic's Messages API (messages_api.h): a request read as the chat it asks for (rendered
// through a template that prints every message field), what is refused under which field, and
// the message and its stream built from chat's parts, errors in Anthropic's shape.
#include "response_test_support.h"
#include "serve_test_support.h"
#include "wire_test_support.h"

#include "tpserve/serve/messages_api.h"
#include "tpserve/serve/response.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tps::serve {
namespace {

using Json = nlohmann::json;

std::string rendered(const std::string& body) {
    const ServedModel m = test::show_all_model();
    const auto r = parse_messages_request(body, m);
    EXPECT_EQ(r.size(), 1u);
    return test::rendered_prompt(m, r.at(0).prompt);
}

TEST(MessagesApi, BlocksAreTheChatTheyStandFor) {
    EXPECT_EQ(rendered(R"({"max_tokens":5,"messages":[{"role":"user","content":"Hi"}]})"), "[user]Hi[assistant]");
    EXPECT_EQ(rendered(R"({"max_tokens":5,"system":[{"type":"text","text":"A."},{"type":"text","text":"B."}],
        "messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]})"),
              "[system]A.\nB.[user]xy[assistant]");
    // an assistant's tool_use blocks are its calls; a user's tool_result blocks are tool messages
    // (named), before the user's text; thinking blocks are left out
    EXPECT_EQ(rendered(R"({"max_tokens":5,"messages":[{"role":"user","content":"Weather?"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":""},{"type":"text","text":"Checking."},
            {"type":"tool_use","id":"t1","name":"w","input":{"city":"Oslo"}},{"type":"tool_use","id":"t2","name":"v","input":{}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"4C"},
            {"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"ok"}]},{"type":"text","text":"So?"}]},
        {"role":"assistant","content":"Warm."},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t9"}]}]})"),
              "[user]Weather?[assistant]Checking.<t1 w {\"city\": \"Oslo\"}><t2 v {}>[tool:w#t1]4C[tool:v#t2]ok[user]So?"
              "[assistant]Warm.[tool#t9][assistant]");
}

TEST(MessagesApi, FieldsReachChat) {
    const ServedModel m = test::served(4096);
    const GenerationRequest g = parse_messages_request(
        R"({"max_tokens":7,"messages":[{"role":"user","content":"x"}],"temperature":0.5,"top_k":3,"stop_sequences":["\n\n"],"stream":true,
            "tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f","disable_parallel_tool_use":true},
            "metadata":{"user_id":"u"}})",
        m).at(0);
    EXPECT_EQ(g.max_tokens, 7);
    EXPECT_FLOAT_EQ(g.sampling.temperature, 0.5f);
    EXPECT_EQ(g.sampling.top_k, 3);
    EXPECT_EQ(g.stop, std::vector<std::string>{"\n\n"});
    EXPECT_TRUE(g.stream);
    EXPECT_TRUE(g.forces_tool_calls);
    EXPECT_TRUE(g.one_tool_call);
    const GenerationRequest any =
        parse_messages_request(R"({"max_tokens":7,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f"}],"tool_choice":{"type":"any"}})", m)
            .at(0);
    EXPECT_TRUE(any.forces_tool_calls);
    EXPECT_FALSE(any.one_tool_call);
}

TEST(MessagesApi, WhatCannotBeServedIsRefusedByItsName) {
    const ServedModel m = test::served(4096);
    const std::tuple<const char*, const char*, const char*> cases[] = {
        {R"({"messages":[{"role":"user","content":"x"}]})", "max_tokens", "'max_tokens' is required"},
        {R"({"max_tokens":0,"messages":[{"role":"user","content":"x"}]})", "max_tokens", "'max_tokens' must be between 1"},
        {R"({"max_tokens":5})", "messages", "'messages' is required"},
        {R"({"max_tokens":5,"messages":[]})", "messages", "non-empty"},
        {R"({"max_tokens":5,"messages":[{"role":"system","content":"x"}]})", "messages", "'messages[0].role' must be"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]})", "messages", "'image' block"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}]})", "messages",
         "'tool_use' block"},
        {R"({"max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"b","input":[]}]}]})",
         "messages", "'messages[0].content[0].input' must be an object"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"a","content":[{"type":"image"}]}]}]})",
         "messages", "must be a text block"},
        {R"({"max_tokens":5,"system":5,"messages":[{"role":"user","content":"x"}]})", "system", "'system' must be a string"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"bash_20250124","name":"bash"}]})", "tools",
         "client tools only"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"some"}})", "tool_choice", "auto, any, tool or none"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"any"}})", "tool_choice", "needs 'tools'"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"temperature":1.5})", "temperature", "between 0 and 1"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"stop_sequences":["a",5]})", "stop_sequences",
         "'stop_sequences' must hold strings"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"mcp_servers":[]})", "mcp_servers", "not offered"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"maybe"}})", "thinking", "\"enabled\" or"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"model":"claude-x"})", "", "'claude-x' does not exist"},
        {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],"priority":2})", "priority", "--scheduling-policy priority"},
    };
    for (const auto& [body, param, words] : cases) {
        try {
            parse_messages_request(body, m);
            ADD_FAILURE() << "accepted: " << body;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.param(), param) << body << ": " << e.what();
            EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << body << ": " << e.what();
        }
    }
    const Json err = Json::parse(anthropic_error_body(ApiError(429, "rate_limit_exceeded", "busy")));
    EXPECT_EQ(err, (Json{{"type", "error"}, {"error", {{"type", "rate_limit_error"}, {"message", "busy"}}}}));
    EXPECT_EQ(Json::parse(anthropic_error_body(ApiError::invalid("bad")))["error"]["type"], "invalid_request_error");
    EXPECT_EQ(Json::parse(anthropic_error_body(ApiError::unavailable("later")))["error"]["type"], "overloaded_error");
}

TEST(MessagesApi, StreamedBlocksOpenAndCloseInOrder) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    GenerationRequest r;
    r.endpoint = Endpoint::chat;
    r.splits_reasoning = true;
    r.thinks = true;
    r.reads_tool_calls = true;
    ResponseWriter w(r, "m", tok, 1, ToolParser::hermes);
    w.speak(std::make_unique<MessagesOutput>("m", 5));
    std::string sse = w.stream_start();
    for (const char* p : {"Hmm", ".</think>", "Let me look.", "\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\"", ": 1}}\n</tool_call>"}) {
        sse += w.stream_piece(0, test::piece(p));
    }
    sse += w.stream_piece(0, test::piece("", "stop"));
    sse += w.stream_end({5, 20, 2});
    const std::vector<Json> ev = test::typed_events(sse);
    std::vector<std::string> types;
    for (const Json& e : ev) types.push_back(e["type"].get<std::string>() + (e.contains("delta") && e["delta"].contains("type") ? ":" + e["delta"]["type"].get<std::string>() : ""));
    const std::vector<std::string> want = {
        "message_start",
        "content_block_start", "content_block_delta:thinking_delta", "content_block_delta:thinking_delta", "content_block_stop",
        "content_block_start", "content_block_delta:text_delta", "content_block_stop",
        "content_block_start", "content_block_delta:input_json_delta", "content_block_delta:input_json_delta", "content_block_stop",
        "message_delta", "message_stop"};
    ASSERT_EQ(types, want);
    EXPECT_EQ(ev[0]["message"]["usage"]["input_tokens"], 5);
    EXPECT_EQ(ev[1]["index"], 0);
    EXPECT_EQ(ev[5]["index"], 1);
    EXPECT_EQ(ev[8]["index"], 2);
    EXPECT_EQ(ev[8]["content_block"]["name"], "w");
    EXPECT_EQ(ev[8]["content_block"]["input"], Json::object());
    // the input as it was written
    EXPECT_EQ(ev[9]["delta"]["partial_json"], "{\"c\"");
    EXPECT_EQ(ev[10]["delta"]["partial_json"], ": 1}");
    EXPECT_EQ(ev[12]["delta"]["stop_reason"], "tool_use");
    EXPECT_EQ(ev[12]["usage"], (Json{{"input_tokens", 3}, {"cache_creation_input_tokens", 0}, {"cache_read_input_tokens", 2}, {"output_tokens", 20}}));

    // the whole message: the same blocks
    ResponseWriter whole(r, "m", tok, 1, ToolParser::hermes);
    whole.speak(std::make_unique<MessagesOutput>("m", 5));
    whole.add(0, test::piece("Hmm.</think>Let me look.\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": 1}}\n</tool_call>", "stop"));
    const Json j = Json::parse(whole.whole({5, 20, 2}));
    EXPECT_EQ(j["type"], "message");
    EXPECT_EQ(j["stop_reason"], "tool_use");
    ASSERT_EQ(j["content"].size(), 3u);
    EXPECT_EQ(j["content"][0], (Json{{"type", "thinking"}, {"thinking", "Hmm."}, {"signature", ""}}));
    EXPECT_EQ(j["content"][1], (Json{{"type", "text"}, {"text", "Let me look."}}));
    EXPECT_EQ(j["content"][2]["input"], (Json{{"c", 1}}));
}

TEST(MessagesApi, StopReasonsAndFailures) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    GenerationRequest chat;
    chat.endpoint = Endpoint::chat;
    auto finished = [&](const std::string& finish, const std::string& stop) {
        ResponseWriter w(chat, "m", tok, 1);
        w.speak(std::make_unique<MessagesOutput>("m", 3));
        Delta d = test::piece("ab", finish);
        d.stop_string = stop;
        w.add(0, d);
        return Json::parse(w.whole({3, 2, 0}));
    };
    EXPECT_EQ(finished("stop", "")["stop_reason"], "end_turn");
    EXPECT_TRUE(finished("stop", "")["stop_sequence"].is_null());
    EXPECT_EQ(finished("stop", "\n\n")["stop_reason"], "stop_sequence");
    EXPECT_EQ(finished("stop", "\n\n")["stop_sequence"], "\n\n");
    EXPECT_EQ(finished("length", "")["stop_reason"], "max_tokens");

    ResponseWriter s(chat, "m", tok, 1);
    s.speak(std::make_unique<MessagesOutput>("m", 3));
    std::string sse = s.stream_start();
    Delta d = test::piece("x", "stop");
    d.stop_string = "END";
    sse += s.stream_piece(0, d);
    sse += s.stream_end({3, 1, 0});
    const std::vector<Json> ev = test::typed_events(sse);
    ASSERT_GE(ev.size(), 2u);
    EXPECT_EQ(ev[ev.size() - 2]["delta"]["stop_reason"], "stop_sequence");
    EXPECT_EQ(ev[ev.size() - 2]["delta"]["stop_sequence"], "END");

    ResponseWriter f(chat, "m", tok, 1);
    f.speak(std::make_unique<MessagesOutput>("m", 3));
    std::string failing = f.stream_start();
    failing += f.stream_error(ApiError(408, "timeout_error", "too slow"));
    const std::vector<Json> failed = test::typed_events(failing);
    ASSERT_EQ(failed.size(), 2u);
    EXPECT_EQ(failed[1], (Json{{"type", "error"}, {"error", {{"type", "timeout_error"}, {"message", "too slow"}}}}));
    EXPECT_EQ(Json::parse(f.error_body(ApiError(503, "x", "later")))["error"]["type"], "overloaded_error");
}

}  // namespace
}  // namespace tps::serve
