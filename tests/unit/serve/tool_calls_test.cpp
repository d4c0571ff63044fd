// Reading tool calls from model output: the two formats as Qwen2.5 and Llama 3.1 write them,
// ordinary text left alone, anything malformed kept as text, and what streaming may show.
#include "tpserve/common/error.h"
#include "tpserve/engine/chat_template.h"
#include "tpserve/serve/tool_calls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

namespace tps::serve {
namespace {

std::string read(const std::string& path) {
    std::ifstream in(std::string(TPS_SOURCE_DIR) + "/" + path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

nlohmann::json args(const ToolCall& c) { return nlohmann::json::parse(c.arguments); }

TEST(ToolCalls, HermesCallsAfterAnyText) {
    const ToolOutput one = parse_tool_calls(
        ToolParser::hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>");
    ASSERT_EQ(one.calls.size(), 1u);
    EXPECT_EQ(one.calls[0].name, "get_weather");
    EXPECT_EQ(args(one.calls[0]), (nlohmann::json{{"city", "Paris"}, {"days", 2}}));
    EXPECT_EQ(one.content, "");
    EXPECT_TRUE(one.calls[0].id.starts_with("call_"));
    EXPECT_EQ(one.calls[0].id.size(), 5u + 24u);

    // two calls after some text; the last cut off by the stop token before its closing tag
    const ToolOutput two = parse_tool_calls(ToolParser::hermes,
                                            "Let me check both.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
                                            "<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": [1, 2]}\"}\n");
    ASSERT_EQ(two.calls.size(), 2u);
    EXPECT_EQ(two.content, "Let me check both.\n\n");  // the text between the calls is kept
    EXPECT_EQ(two.calls[1].name, "b");
    EXPECT_EQ(args(two.calls[1]), (nlohmann::json{{"x", {1, 2}}}));  // arguments given as JSON text stay as they are
    EXPECT_NE(two.calls[0].id, two.calls[1].id);
    const ToolOutput around = parse_tool_calls(
        ToolParser::hermes, "Before. <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> Between. "
                            "<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call> After.");
    ASSERT_EQ(around.calls.size(), 2u);
    EXPECT_EQ(around.content, "Before.  Between.  After.");
}

TEST(ToolCalls, Llama3JsonIsTheWholeOutput) {
    const ToolOutput one = parse_tool_calls(ToolParser::llama3_json, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}");
    ASSERT_EQ(one.calls.size(), 1u);
    EXPECT_EQ(one.calls[0].name, "get_weather");
    EXPECT_EQ(args(one.calls[0]), (nlohmann::json{{"city", "Oslo"}}));
    EXPECT_EQ(one.content, "");
    // <|python_tag|> (when special tokens are kept), "arguments", several separated by ';', braces in strings
    const ToolOutput two = parse_tool_calls(
        ToolParser::llama3_json,
        "<|python_tag|>{\"name\": \"a\", \"arguments\": {\"s\": \"}{\"}}; {\"name\": \"b\", \"parameters\": {}}  ");
    ASSERT_EQ(two.calls.size(), 2u);
    EXPECT_EQ(args(two.calls[0]), (nlohmann::json{{"s", "}{"}}));
    EXPECT_EQ(two.calls[1].name, "b");
}

TEST(ToolCalls, MistralIsAListWithShortIds) {
    for (const char* text : {R"([{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "b", "arguments": {}}])",
                             R"([TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "b", "arguments": {}}])"}) {
        const ToolOutput out = parse_tool_calls(ToolParser::mistral, text);
        ASSERT_EQ(out.calls.size(), 2u) << text;
        EXPECT_EQ(out.calls[0].name, "get_weather");
        EXPECT_EQ(args(out.calls[0]), (nlohmann::json{{"city", "Rome"}}));
        for (const auto& c : out.calls) {
            EXPECT_EQ(c.id.size(), 9u);
            EXPECT_TRUE(std::all_of(c.id.begin(), c.id.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)); }));
        }
        EXPECT_EQ(out.content, "");
    }
    for (const char* text : {"[1, 2, 3]", "[]", R"([{"name": "f", "arguments": {}}] and more)", R"([{"name": "f"}])", "Sure."}) {
        EXPECT_TRUE(parse_tool_calls(ToolParser::mistral, text).calls.empty()) << text;
    }
    EXPECT_EQ(tool_content_prefix(ToolParser::mistral, " [{\"na"), 0u);
    EXPECT_EQ(tool_content_prefix(ToolParser::mistral, "[TOOL_"), 0u);
    EXPECT_EQ(tool_content_prefix(ToolParser::mistral, "Sure"), 4u);
    // the call comes back in the next request: Mistral's template takes our id, not an OpenAI-style one
    const ChatTemplate t(read("tests/fixtures/chat_templates/mistral-7b-instruct-v0.3.jinja"), "mistral-7b-instruct-v0.3.jinja");
    auto turn = [&](const std::string& id) {
        nlohmann::ordered_json call = {{"id", id}, {"type", "function"}, {"function", {{"name", "get_weather"}, {"arguments", {{"city", "Rome"}}}}}};
        return nlohmann::ordered_json{
            {"messages", {{{"role", "user"}, {"content", "Weather?"}},
                          {{"role", "assistant"}, {"tool_calls", {call}}},
                          {{"role", "tool"}, {"tool_call_id", id}, {"content", "sunny"}}}},
            {"add_generation_prompt", true}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
    };
    const std::string id = parse_tool_calls(ToolParser::mistral, R"([{"name": "get_weather", "arguments": {}}])").calls.at(0).id;
    EXPECT_NO_THROW(t.render(turn(id)));
    EXPECT_THROW(t.render(turn("call_0123456789abcdef01234567")), InputError);
}

TEST(ToolCalls, AnythingElseIsText) {
    const char* texts[] = {
        "The weather in Paris is mild.",
        "",
        "{\"answer\": 42}",                                         // JSON, but not a call
        "{\"name\": \"f\", \"parameters\": {\"x\": 1}",              // cut off
        "{\"name\": \"f\", \"parameters\": {}} and then some text",  // text after the call
        "{\"name\": \"\", \"parameters\": {}}",                     // no name
        "{\"name\": \"f\", \"parameters\": 3}",                      // arguments not an object
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": }\n</tool_call>",  // malformed JSON
        "<tool_call>not json</tool_call>",
    };
    for (const char* t : texts) {
        for (const ToolParser p : {ToolParser::hermes, ToolParser::llama3_json, ToolParser::mistral, ToolParser::none}) {
            const ToolOutput out = parse_tool_calls(p, t);
            EXPECT_TRUE(out.calls.empty()) << tool_parser_name(p) << ": " << t;
            EXPECT_EQ(out.content, t) << tool_parser_name(p) << ": " << t;
        }
    }
    // nesting deeper than any call's is not parsed
    std::string deep = "{\"name\": \"f\", \"parameters\": ";
    for (int i = 0; i < 100; ++i) deep += "{\"a\": ";
    deep += "1" + std::string(100, '}') + "}";
    EXPECT_TRUE(parse_tool_calls(ToolParser::llama3_json, deep).calls.empty());
    EXPECT_TRUE(parse_tool_calls(ToolParser::none, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>").calls.empty());
}

TEST(ToolCalls, StreamingHoldsBackWhatMayBeACall) {
    // hermes: text before the tag is shown; a tail that may begin the tag is held
    EXPECT_EQ(tool_content_prefix(ToolParser::hermes, "Sure, "), 6u);
    EXPECT_EQ(tool_content_prefix(ToolParser::hermes, "Sure, <tool"), 6u);
    EXPECT_EQ(tool_content_prefix(ToolParser::hermes, "Sure, <tool_call>{\"na"), 6u);
    EXPECT_EQ(tool_content_prefix(ToolParser::hermes, "a < b"), 5u);
    EXPECT_EQ(tool_content_prefix(ToolParser::hermes, "x <"), 2u);
    // llama3_json: held while it may be a call (it starts with '{' or the python tag)
    EXPECT_EQ(tool_content_prefix(ToolParser::llama3_json, "  "), 0u);
    EXPECT_EQ(tool_content_prefix(ToolParser::llama3_json, " {\"name"), 0u);
    EXPECT_EQ(tool_content_prefix(ToolParser::llama3_json, "<|python"), 0u);
    EXPECT_EQ(tool_content_prefix(ToolParser::llama3_json, "Hello"), 5u);
    EXPECT_EQ(tool_content_prefix(ToolParser::none, "<tool_call>"), 11u);
}

TEST(ToolCalls, AutoReadsTheChatTemplate) {
    const std::string dir = "tests/fixtures/chat_templates/";
    EXPECT_EQ(tool_parser_named("auto", read(dir + "qwen2.5-7b-instruct.jinja")), ToolParser::hermes);
    EXPECT_EQ(tool_parser_named("auto", read(dir + "llama-3.1-8b-instruct.jinja")), ToolParser::llama3_json);
    EXPECT_EQ(tool_parser_named("auto", read(dir + "smollm2-135m-instruct.jinja")), ToolParser::none);
    EXPECT_EQ(tool_parser_named("auto", read(dir + "llama-2-7b-chat.jinja")), ToolParser::none);
    EXPECT_EQ(tool_parser_named("auto", read(dir + "mistral-7b-instruct-v0.3.jinja")), ToolParser::mistral);
    EXPECT_EQ(tool_parser_named("auto", read(dir + "mistral-7b-instruct-v0.1.jinja")), ToolParser::none);
    EXPECT_EQ(tool_parser_named("mistral", ""), ToolParser::mistral);
    EXPECT_EQ(tool_parser_named("auto", ""), ToolParser::none);
    EXPECT_EQ(tool_parser_named("hermes", ""), ToolParser::hermes);
    EXPECT_EQ(tool_parser_named("none", read(dir + "qwen2.5-7b-instruct.jinja")), ToolParser::none);
    EXPECT_THROW(tool_parser_named("pythonic", ""), UsageError);
}

}  // namespace
}  // namespace tps::serve
