// The Responses API (responses_api.h): a request read as the chat it asks for (rendered through a
// template that prints every message field), what is refused and under which field, and the
// response object and its stream built from chat's parts.
#include "response_test_support.h"
#include "serve_test_support.h"
#include "wire_test_support.h"

#include "tpserve/serve/response.h"
#include "tpserve/serve/responses_api.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>

namespace tps::serve {
namespace {

using Json = nlohmann::json;

std::string rendered(const std::string& body, ResponseStore* store = nullptr) {
    const ServedModel m = test::show_all_model();
    const ResponsesRequest r = parse_responses_request(body, m, store);
    EXPECT_EQ(r.choices.size(), 1u);
    return test::rendered_prompt(m, r.choices.at(0).prompt);
}

TEST(ResponsesApi, InputItemsAreTheChatTheyStandFor) {
    EXPECT_EQ(rendered(R"({"input":"Hi"})"), "[user]Hi[assistant]");
    EXPECT_EQ(rendered(R"({"instructions":"Be kind.","input":[{"role":"developer","content":"Short."},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]}]})"),
              "[system]Be kind.[system]Short.[user]ab[assistant]");
    // calls after the assistant's message belong to its turn; their outputs are tool messages with
    // the function's name; earlier reasoning is left out
    EXPECT_EQ(rendered(R"({"input":[{"role":"user","content":"Weather?"},
        {"type":"reasoning","id":"rs_1","summary":[]},
        {"role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
        {"type":"function_call","call_id":"c1","name":"w","arguments":"{\"city\":\"Oslo\"}"},
        {"type":"function_call","call_id":"c2","name":"t","arguments":""},
        {"type":"function_call_output","call_id":"c1","output":"4C"},
        {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"noon"}]},
        {"type":"function_call","call_id":"c3","name":"w","arguments":"{}"},
        {"type":"function_call_output","call_id":"c9","output":"?"}]})"),
              "[user]Weather?[assistant]Checking.<c1 w {\"city\": \"Oslo\"}><c2 t {}>[tool:w#c1]4C[tool:t#c2]noon"
              "[assistant]<c3 w {}>[tool#c9]?[assistant]");
}

TEST(ResponsesApi, FieldsReachChat) {
    const ServedModel m = test::served(4096);
    const ResponsesRequest r = parse_responses_request(
        R"({"input":"x","max_output_tokens":7,"temperature":0.5,"top_p":0.9,"stream":true,"parallel_tool_calls":false,
            "tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"f"},
            "metadata":{"k":"v"},"seed":3})",
        m);
    const GenerationRequest& g = r.choices.at(0);
    EXPECT_EQ(g.max_tokens, 7);
    EXPECT_FLOAT_EQ(g.sampling.temperature, 0.5f);
    EXPECT_FLOAT_EQ(g.sampling.top_p, 0.9f);
    EXPECT_TRUE(g.stream);
    EXPECT_TRUE(g.forces_tool_calls);  // (the named function)
    EXPECT_TRUE(g.one_tool_call);
    EXPECT_NE(g.sampling.constraint, nullptr);
    EXPECT_EQ(r.shown["metadata"], (Json{{"k", "v"}}));
    EXPECT_EQ(r.shown["tools"][0]["name"], "f");  // (in the Responses form)
    EXPECT_EQ(r.shown["max_output_tokens"], 7);
    EXPECT_EQ(r.shown["store"], false);
    const ResponsesRequest f = parse_responses_request(
        R"({"input":"x","text":{"format":{"type":"json_schema","name":"a","schema":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}}}})",
        m);
    EXPECT_NE(f.choices.at(0).sampling.constraint, nullptr);
    EXPECT_EQ(parse_responses_request(R"({"input":"x","text":{"format":{"type":"text"}}})", m).choices.at(0).sampling.constraint, nullptr);
    // log-probabilities when include asks for them (top_logprobs alone shows none, as OpenAI's);
    // encrypted reasoning is accepted: thoughts come as text, nothing is encrypted
    const ResponsesRequest lp = parse_responses_request(
        R"({"input":"x","include":["message.output_text.logprobs","reasoning.encrypted_content"],"top_logprobs":3})", m);
    EXPECT_EQ(lp.choices.at(0).logprobs, 3);
    EXPECT_EQ(lp.shown["top_logprobs"], 3);
    EXPECT_EQ(parse_responses_request(R"({"input":"x","top_logprobs":3})", m).choices.at(0).logprobs, -1);
}

TEST(ResponsesApi, WhatCannotBeServedIsRefusedByItsName) {
    const ServedModel m = test::served(4096);
    const std::tuple<const char*, const char*, const char*> cases[] = {
        {R"({"instructions":"x"})", "input", "'input' is required"},
        {R"({"input":[]})", "input", "a non-empty array"},
        {R"({"input":5})", "input", "got a number"},
        {R"({"input":[{"role":"robot","content":"x"}]})", "input", "'input[0].role' must be user, assistant, system or developer"},
        {R"({"input":[{"role":"user"}]})", "input", "'input[0].content' is required"},
        {R"({"input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]})", "input", "'input_file'"},
        {R"({"input":[{"type":"function_call","name":"f","arguments":"{}"}]})", "input", "'input[0].call_id' must be a string"},
        {R"({"input":[{"type":"function_call_output","call_id":"c"}]})", "input", "'input[0].output' is required"},
        {R"({"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{x"}]})", "input", "is not JSON"},
        {R"({"input":[{"type":"web_search_call","id":"w"}]})", "input", "'web_search_call' is not supported"},
        {R"({"input":"x","instructions":["a"]})", "instructions", "'instructions' must be a string"},
        {R"({"input":"x","previous_response_id":"resp_1"})", "previous_response_id", "this server keeps no responses"},
        {R"({"input":"x","conversation":"conv_1"})", "conversation", "use previous_response_id"},
        {R"({"input":"x","max_tool_calls":3})", "max_tool_calls", "this server runs none"},
        {R"({"input":"x","store":"yes"})", "store", "'store' must be a boolean"},
        {R"({"input":"x","background":true})", "background", "not offered"},
        {R"({"input":"x","include":["file_search_call.results"]})", "include", "\"file_search_call.results\" is not offered"},
        {R"({"input":"x","include":"message.output_text.logprobs"})", "include", "must be an array"},
        {R"({"input":"x","top_logprobs":21})", "top_logprobs", "between 0 and 20"},
        {R"({"input":"x","truncation":"middle"})", "truncation", "must be \"auto\" or \"disabled\""},
        {R"({"input":"x","metadata":{"k":1}})", "metadata", "at most 16 strings"},
        {R"({"input":"x","tools":[{"type":"file_search"}]})", "tools", "'tools[0]' is of type \"file_search\""},
        {R"({"input":"x","tools":[{"type":"function"}]})", "tools", "'tools[0].name' must be a string"},
        {R"({"input":"x","tool_choice":{"type":"web_search"}})", "tool_choice", "'tool_choice' must be"},
        {R"({"input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}})", "tool_choice",
         "names the function 'g'"},
        {R"({"input":"x","text":{"format":{"type":"yaml"}}})", "text.format", "must be text, json_object or json_schema"},
        {R"({"input":"x","text":{"verbosity":"low"}})", "text.verbosity", "not offered"},
        {R"({"input":"x","text":{"format":{"type":"json_schema","name":"a","schema":{"type":"integer","multipleOf":3}}}})",
         "text.format", "'multipleOf'"},
        {R"({"input":"x","reasoning":{"summary":"auto"}})", "reasoning", "not offered"},
        {R"({"input":"x","max_output_tokens":0})", "max_output_tokens", "'max_output_tokens' must be between 1"},
        {R"({"input":"x","max_output_tokens":5000})", "max_output_tokens", "max_output_tokens"},
        {R"({"input":"x","model":"gpt-4o"})", "", "'gpt-4o' does not exist"},
        {R"([1])", "", "must be a JSON object"},
    };
    for (const auto& [body, param, words] : cases) {
        try {
            parse_responses_request(body, m);
            ADD_FAILURE() << "accepted: " << body;
        } catch (const ApiError& e) {
            EXPECT_GE(e.status(), 400) << body;
            EXPECT_EQ(e.param(), param) << body << ": " << e.what();
            EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << body << ": " << e.what();
        }
    }
}

// truncation "auto": a conversation over the context loses its oldest turns (as few as will do),
// keeping the system messages and the last turn; "disabled" (the default) refuses it, with
// OpenAI's code context_length_exceeded.
TEST(ResponsesApi, TruncationAutoDropsTheOldestTurns) {
    const ServedModel m = test::served(256);
    Json input = Json::array();
    for (int t = 0; t < 8; ++t) {
        input.push_back({{"role", "user"}, {"content", fmt::format("Question {}: {}", t, std::string(60, 'a' + t))}});
        input.push_back({{"role", "assistant"}, {"content", fmt::format("Answer {}.", t)}});
    }
    input.push_back({{"role", "user"}, {"content", "The last question?"}});
    const Json body = {{"input", input}, {"instructions", "Be brief."}, {"max_output_tokens", 16}};
    try {
        parse_responses_request(body.dump(), m);
        ADD_FAILURE() << "accepted";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.code(), "context_length_exceeded") << e.what();
        EXPECT_EQ(e.param(), "input") << e.what();  // (the prompt alone is over it)
    }
    Json truncated = body;
    truncated["truncation"] = "auto";
    const ResponsesRequest r = parse_responses_request(truncated.dump(), m);
    const std::string prompt = m.tokenizer->decode(r.choices.at(0).prompt, false);
    EXPECT_NE(prompt.find("Be brief."), std::string::npos) << prompt;
    EXPECT_NE(prompt.find("The last question?"), std::string::npos) << prompt;
    EXPECT_EQ(prompt.find("Question 0"), std::string::npos) << prompt;
    EXPECT_LE(static_cast<int64_t>(r.choices.at(0).prompt.size()) + 16, 256);
    EXPECT_EQ(r.shown["truncation"], "auto");
    // as few as will do: one turn more would have fitted too, one fewer not
    const size_t first_kept = prompt.find("Question ");
    ASSERT_NE(first_kept, std::string::npos);
    const int t = prompt[first_kept + 9] - '0';
    Json one_fewer = truncated;
    one_fewer["input"] = Json(input.begin() + 2 * (t - 1), input.end());
    one_fewer["truncation"] = "disabled";
    EXPECT_THROW(parse_responses_request(one_fewer.dump(), m), ApiError);
    // the last turn alone does not fit: the error is still the context's
    Json huge = {{"input", std::string(2000, 'z')}, {"truncation", "auto"}};
    try {
        parse_responses_request(huge.dump(), m);
        ADD_FAILURE() << "accepted";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.code(), "context_length_exceeded") << e.what();
    }
}

TEST(ResponsesApi, TheStoreKeepsTheMostRecentlyUsedWithinItsBytes) {
    auto entry = [](int n) { return ResponseStore::Entry{Json{{"n", n}}, Json::array({std::string(100, 'x')})}; };
    ResponseStore store(400);  // three entries of ~120 bytes
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(store.put("r" + std::to_string(i), entry(i)));
    EXPECT_EQ(store.size(), 3u);
    EXPECT_TRUE(store.get("r0"));  // now the most recent: r1 goes first
    EXPECT_TRUE(store.put("r3", entry(3)));
    EXPECT_FALSE(store.get("r1"));
    EXPECT_EQ(store.get("r0")->response["n"], 0);
    EXPECT_TRUE(store.get("r2") && store.get("r3"));
    EXPECT_LE(store.bytes(), 400u);
    EXPECT_TRUE(store.erase("r2"));
    EXPECT_FALSE(store.erase("r2"));
    EXPECT_FALSE(store.get("r2"));
    EXPECT_TRUE(store.put("r3", entry(33)));  // (put again: replaced, counted once)
    EXPECT_EQ(store.get("r3")->response["n"], 33);
    EXPECT_EQ(store.size(), 2u);
    EXPECT_FALSE(store.put("big", ResponseStore::Entry{Json::object(), Json::array({std::string(500, 'x')})}));
    EXPECT_FALSE(store.get("big"));
    EXPECT_EQ(store.size(), 2u);
}

TEST(ResponsesApi, PreviousResponseIdContinuesTheStoredConversation) {
    ResponseStore store(1 << 20);
    // what the server keeps: the input items, then the output items
    store.put("resp_a", {Json{{"id", "resp_a"}},
                         Json::parse(R"([{"role":"user","content":"Hi"},{"type":"reasoning","id":"rs_1","summary":[]},
            {"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello","annotations":[]}]},
            {"id":"fc_1","type":"function_call","status":"completed","call_id":"c1","name":"f","arguments":"{}"}])")});
    EXPECT_EQ(rendered(R"({"previous_response_id":"resp_a","instructions":"New.",
        "input":[{"type":"function_call_output","call_id":"c1","output":"done"}]})", &store),
              "[system]New.[user]Hi[assistant]Hello<c1 f {}>[tool:f#c1]done[assistant]");
    EXPECT_EQ(rendered(R"({"previous_response_id":"resp_a","input":"More"})", &store),
              "[user]Hi[assistant]Hello<c1 f {}>[user]More[assistant]");
    const ServedModel m = test::served(4096);
    const ResponsesRequest kept = parse_responses_request(R"({"previous_response_id":"resp_a","input":"More"})", m, &store);
    EXPECT_TRUE(kept.store);
    EXPECT_EQ(kept.shown["store"], true);
    EXPECT_EQ(kept.shown["previous_response_id"], "resp_a");
    EXPECT_EQ(kept.history.size(), 5u);  // (the stored four, then the new one)
    EXPECT_FALSE(parse_responses_request(R"({"input":"x","store":false})", m, &store).store);
    try {
        parse_responses_request(R"({"previous_response_id":"resp_zz","input":"More"})", m, &store);
        ADD_FAILURE() << "an unknown id was taken";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status(), 404);
        EXPECT_EQ(e.param(), "previous_response_id");
        EXPECT_NE(std::string(e.what()).find("no stored response 'resp_zz'"), std::string::npos) << e.what();
    }
    ResponseStore none(0);
    EXPECT_THROW(parse_responses_request(R"({"previous_response_id":"resp_a","input":"x"})", m, &none), ApiError);
    EXPECT_FALSE(parse_responses_request(R"({"input":"x"})", m, &none).store);
}

GenerationRequest thinking_chat() {
    GenerationRequest r;
    r.endpoint = Endpoint::chat;
    r.splits_reasoning = true;
    r.thinks = true;
    r.reads_tool_calls = true;
    return r;
}

TEST(ResponsesApi, StreamedItemsOpenAndCloseInOrder) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    ResponseWriter w(thinking_chat(), "m", tok, 1, ToolParser::hermes);
    w.speak(std::make_unique<ResponsesOutput>(Json::object(), "m"));
    std::string sse = w.stream_start();
    int64_t tokens = 0;
    for (const char* p : {"I should ", "check.</think>", "Let me look.", "\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\"", ": 1}}\n</tool_call>"}) {
        tokens += 4;
        sse += w.stream_piece(0, test::piece(p, {}, tokens));
    }
    sse += w.stream_piece(0, test::piece("", "stop", 20));
    sse += w.stream_end({5, 20, 2});
    EXPECT_EQ(sse.find("[DONE]"), std::string::npos);
    const std::vector<Json> ev = test::typed_events(sse);
    std::vector<std::string> types;
    for (size_t i = 0; i < ev.size(); ++i) {
        types.push_back(ev[i]["type"]);
        EXPECT_EQ(ev[i]["sequence_number"], i);
    }
    const std::vector<std::string> want = {
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        // (the call's arguments as they were written)
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"};
    ASSERT_EQ(types, want);
    const Json& done = ev.back()["response"];
    EXPECT_EQ(done["id"], ev.front()["response"]["id"]);
    EXPECT_EQ(done["status"], "completed");
    ASSERT_EQ(done["output"].size(), 3u);
    EXPECT_EQ(done["output"][0]["content"][0]["text"], "I should check.");
    EXPECT_EQ(done["output"][1]["content"][0]["text"], "Let me look.");
    EXPECT_EQ(ev[16]["delta"], "{\"c\"");
    EXPECT_EQ(ev[17]["delta"], ": 1}");
    EXPECT_EQ(done["output"][2]["name"], "w");
    EXPECT_EQ(Json::parse(done["output"][2]["arguments"].get<std::string>()), (Json{{"c", 1}}));
    EXPECT_EQ(done["usage"]["input_tokens"], 5);
    EXPECT_EQ(done["usage"]["output_tokens"], 20);
    EXPECT_EQ(done["usage"]["input_tokens_details"]["cached_tokens"], 2);
    EXPECT_EQ(done["usage"]["output_tokens_details"]["reasoning_tokens"], 8);  // (the tokens up to the one that ends them)
    std::set<std::string> ids;
    for (size_t i = 0; i < 3; ++i) {
        ids.insert(done["output"][i]["id"].get<std::string>());
        EXPECT_EQ(done["output"][i]["status"], "completed");
    }
    EXPECT_EQ(ids.size(), 3u);
    // each event names its item and place
    EXPECT_EQ(ev[4]["item_id"], done["output"][0]["id"]);
    EXPECT_EQ(ev[12]["output_index"], 1);
    EXPECT_EQ(ev[12]["item_id"], done["output"][1]["id"]);

    // the whole answer: the same items
    ResponseWriter whole(thinking_chat(), "m", tok, 1, ToolParser::hermes);
    whole.speak(std::make_unique<ResponsesOutput>(Json::object(), "m"));
    whole.add(0, test::piece("I should check.</think>", {}, 8));
    whole.add(0, test::piece("Let me look.\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": 1}}\n</tool_call>", "stop", 20));
    const Json j = Json::parse(whole.whole({5, 20, 2}));
    EXPECT_EQ(j["object"], "response");
    ASSERT_EQ(j["output"].size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        Json a = j["output"][i], b = done["output"][i];
        for (const char* fresh : {"id", "call_id"}) {  // (made anew for each answer)
            a.erase(fresh);
            b.erase(fresh);
        }
        EXPECT_EQ(a, b) << i;
    }
    EXPECT_EQ(j["usage"], done["usage"]);
}

TEST(ResponsesApi, CutAndFailedStreams) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    GenerationRequest chat;
    chat.endpoint = Endpoint::chat;
    ResponseWriter w(chat, "m", tok, 1);
    w.speak(std::make_unique<ResponsesOutput>(Json{{"max_output_tokens", 2}}, "m"));
    std::string sse = w.stream_start();  // (one call a statement: they must run in this order)
    sse += w.stream_piece(0, test::piece("ab"));
    sse += w.stream_piece(0, test::piece("c", "length"));
    sse += w.stream_end({3, 2, 0});
    const std::vector<Json> ev = test::typed_events(sse);
    ASSERT_FALSE(ev.empty());
    EXPECT_EQ(ev.back()["type"], "response.incomplete");
    EXPECT_EQ(ev.back()["response"]["incomplete_details"]["reason"], "max_output_tokens");
    EXPECT_EQ(ev.back()["response"]["output"][0]["status"], "incomplete");
    EXPECT_EQ(ev.back()["response"]["output"][0]["content"][0]["text"], "abc");
    EXPECT_EQ(ev.back()["response"]["max_output_tokens"], 2);

    ResponseWriter f(chat, "m", tok, 1);
    f.speak(std::make_unique<ResponsesOutput>(Json::object(), "m"));
    std::string failing = f.stream_start();
    failing += f.stream_error(ApiError(408, "timeout_error", "too slow"));
    const std::vector<Json> failed = test::typed_events(failing);
    ASSERT_EQ(failed.size(), 4u);
    EXPECT_EQ(failed[2]["type"], "error");
    EXPECT_EQ(failed[2]["code"], "timeout_error");
    EXPECT_EQ(failed[2]["message"], "too slow");
    EXPECT_EQ(failed[3]["type"], "response.failed");
    EXPECT_EQ(failed[3]["response"]["status"], "failed");
    EXPECT_EQ(failed[3]["response"]["error"]["message"], "too slow");
}

}  // namespace
}  // namespace tps::serve
