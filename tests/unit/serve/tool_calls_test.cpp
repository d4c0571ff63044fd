// Reading tool calls from model output: the formats as Qwen2.5, Llama 3.1 and Mistral write them,
// ordinary text left alone, anything that is not a call kept as text, and streaming: a call shown
// piece by piece, the pieces of any split of the output adding up to the whole output's reading.
#include "tpserve/common/error.h"
#include "tpserve/engine/chat_template.h"
#include "tpserve/serve/tool_calls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <numeric>
#include <random>
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
    EXPECT_EQ(two.content, "Let me check both.");  // (blanks next to calls are not content)
    EXPECT_EQ(two.calls[1].name, "b");
    EXPECT_EQ(args(two.calls[1]), (nlohmann::json{{"x", {1, 2}}}));  // arguments given as JSON text stay as they are
    EXPECT_NE(two.calls[0].id, two.calls[1].id);
    const ToolOutput around = parse_tool_calls(
        ToolParser::hermes, "Before. <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> Between. "
                            "<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call> After.");
    ASSERT_EQ(around.calls.size(), 2u);
    EXPECT_EQ(around.content, "Before. Between. After.");  // the text between and after the calls is kept
    // arguments are the model's own text
    const char* raw = R"(<tool_call>{"name": "a", "arguments": {"x" :1 ,"y":"\u00e9}"}}</tool_call>)";
    EXPECT_EQ(parse_tool_calls(ToolParser::hermes, raw).calls.at(0).arguments, R"({"x" :1 ,"y":"\u00e9}"})");
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
    for (const char* text : {"[1, 2, 3]", "[]", R"([{"name": "f"}])", "Sure.", "[TOOL_CALLS]"}) {
        const ToolOutput out = parse_tool_calls(ToolParser::mistral, text);
        EXPECT_TRUE(out.calls.empty()) << text;
        EXPECT_EQ(out.content, text);
    }
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
        "  \n",
        "{\"answer\": 42}",                          // JSON, but not a call
        "{\"name\": \"\", \"parameters\": {}}",      // no name
        "{\"name\": \"f\", \"parameters\": 3}",       // arguments not an object
        "{\"parameters\": {}, \"name\": 3}",          // a name that is not a string
        "{\"name\": \"f\", \"parameters\": \"{x\"}",  // arguments as a string that is no object
        "{\"name\": \"f\", \"parameters\": 3",        // cut off before the arguments began
        "<tool_call>not json</tool_call>",
        "<tool_call>\n{\"name\": \"f\", \"argu",      // cut off before the arguments began
        "a < b <tool_call",
    };
    for (const char* t : texts) {
        for (const ToolParser p : {ToolParser::hermes, ToolParser::llama3_json, ToolParser::mistral, ToolParser::json_list, ToolParser::none}) {
            const ToolOutput out = parse_tool_calls(p, t);
            EXPECT_TRUE(out.calls.empty()) << tool_parser_name(p) << ": " << t;
            EXPECT_EQ(out.content, t) << tool_parser_name(p) << ": " << t;
        }
    }
    // a call written another way than name first is checked whole: nesting deeper than any call's is text
    std::string deep = "{\"parameters\": ";
    for (int i = 0; i < 100; ++i) deep += "{\"a\": ";
    deep += "1" + std::string(100, '}') + ", \"name\": \"f\"}";
    EXPECT_TRUE(parse_tool_calls(ToolParser::llama3_json, deep).calls.empty());
    EXPECT_TRUE(parse_tool_calls(ToolParser::none, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>").calls.empty());
}

TEST(ToolCalls, CallsWrittenOtherwiseAreReadWhole) {
    const ToolOutput first = parse_tool_calls(ToolParser::hermes, "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"}</tool_call>");
    ASSERT_EQ(first.calls.size(), 1u);
    EXPECT_EQ(first.calls[0].name, "f");
    EXPECT_EQ(first.calls[0].arguments, "{\"x\": 1}");
    const ToolOutput extra = parse_tool_calls(ToolParser::llama3_json, "{\"type\": \"function\", \"name\": \"f\", \"parameters\": {}}");
    ASSERT_EQ(extra.calls.size(), 1u);
    EXPECT_EQ(extra.calls[0].arguments, "{}");
}

TEST(ToolCalls, WhatFollowsTheCallsIsText) {
    const ToolOutput llama = parse_tool_calls(ToolParser::llama3_json, "{\"name\": \"f\", \"parameters\": {}} and then some text");
    ASSERT_EQ(llama.calls.size(), 1u);
    EXPECT_EQ(llama.content, "and then some text");
    const ToolOutput list = parse_tool_calls(ToolParser::mistral, R"([{"name": "f", "arguments": {}}] and more)");
    ASSERT_EQ(list.calls.size(), 1u);
    EXPECT_EQ(list.content, "and more");
    // more members after the arguments belong to the call
    const ToolOutput members =
        parse_tool_calls(ToolParser::mistral, R"([{"name": "f", "arguments": {"a": 1}, "id": "x{"}, {"name": "g", "arguments": {}}])");
    ASSERT_EQ(members.calls.size(), 2u);
    EXPECT_EQ(members.calls[0].arguments, "{\"a\": 1}");
    EXPECT_EQ(members.content, "");
    // hermes: a call's block runs to its closing tag, or to the next call when the tag is missing
    const ToolOutput hermes = parse_tool_calls(ToolParser::hermes, "<tool_call>{\"name\": \"a\", \"arguments\": {}} junk\n"
                                                                    "<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>");
    ASSERT_EQ(hermes.calls.size(), 2u);
    EXPECT_EQ(hermes.calls[1].name, "b");
    EXPECT_EQ(hermes.content, "");
}

TEST(ToolCalls, ACallCutShortEndsWhereTheOutputDid) {
    const ToolOutput cut = parse_tool_calls(ToolParser::hermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, \"]");
    ASSERT_EQ(cut.calls.size(), 1u);
    EXPECT_FALSE(cut.complete);
    EXPECT_EQ(cut.calls[0].arguments, "{\"x\": [1, \"]");
    const ToolOutput whole = parse_tool_calls(ToolParser::llama3_json, "{\"name\": \"f\", \"parameters\": {\"x\": \"}\"}");
    EXPECT_TRUE(whole.complete);  // (the call's own closing brace may be missing)
    EXPECT_EQ(whole.calls.at(0).arguments, "{\"x\": \"}\"}");
}

TEST(ToolCalls, FirstOnlyReadsPastTheOthers) {
    const ToolOutput out = parse_tool_calls(ToolParser::hermes,
                                            "<tool_call>{\"name\": \"a\", \"arguments\": {\"x\": 1}}</tool_call>\n"
                                            "<tool_call>{\"name\": \"b\", \"arguments\": {\"y\": 2}}</tool_call> Done.",
                                            true);
    ASSERT_EQ(out.calls.size(), 1u);
    EXPECT_EQ(out.calls[0].name, "a");
    EXPECT_EQ(out.content, " Done.");
    const ToolOutput list = parse_tool_calls(ToolParser::json_list, R"([{"name": "a", "parameters": {}}, {"name": "b", "parameters": {"z": [}])", true);
    ASSERT_EQ(list.calls.size(), 1u);
    EXPECT_TRUE(list.complete);  // (the dropped call's arguments are not the answer's)
}

// Pushes `text` in the pieces `cuts` make and puts the steps together as parse_tool_calls does.
ToolOutput streamed(ToolParser p, std::string_view text, const std::vector<size_t>& cuts, std::vector<ToolStep>* steps = nullptr) {
    ToolCallReader reader(p);
    ToolOutput out;
    size_t from = 0;
    for (size_t k = 0; k <= cuts.size(); ++k) {
        const size_t to = k < cuts.size() ? cuts[k] : text.size();
        ToolStep step = reader.push(text.substr(from, to - from), k == cuts.size());
        out.content += step.content;
        for (const ToolCallPiece& piece : step.calls) {
            if (!piece.id.empty()) {
                EXPECT_EQ(piece.index, out.calls.size());
                out.calls.push_back({piece.id, piece.name, {}});
            } else {
                EXPECT_EQ(piece.index + 1, out.calls.size());
            }
            out.calls.back().arguments += piece.arguments;
        }
        if (steps) steps->push_back(std::move(step));
        from = to;
    }
    out.complete = !reader.cut();
    EXPECT_EQ(reader.calls(), out.calls.size());
    return out;
}

void expect_same(const ToolOutput& a, const ToolOutput& b, const std::string& what) {
    EXPECT_EQ(a.content, b.content) << what;
    EXPECT_EQ(a.complete, b.complete) << what;
    ASSERT_EQ(a.calls.size(), b.calls.size()) << what;
    for (size_t i = 0; i < a.calls.size(); ++i) {
        EXPECT_EQ(a.calls[i].name, b.calls[i].name) << what;
        EXPECT_EQ(a.calls[i].arguments, b.calls[i].arguments) << what;
    }
}

TEST(ToolCalls, StreamingShowsACallAsItIsWritten) {
    std::vector<ToolStep> steps;
    const std::string text = "Sure, <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa"
                             "ris\", \"days\": 2}}\n</tool_call>";
    const size_t pa = text.find("Pa") + 2;
    const ToolOutput out = streamed(ToolParser::hermes, text, {4, 10, 30, pa, pa + 7, text.size() - 5}, &steps);
    ASSERT_EQ(steps.size(), 7u);
    EXPECT_EQ(steps[0].content, "Sure");
    EXPECT_EQ(steps[1].content, ",");     // (the blank after it is held: a call may follow)
    EXPECT_TRUE(steps[2].calls.empty());  // the name is not whole yet
    ASSERT_EQ(steps[3].calls.size(), 1u);  // the name, and the arguments begun
    EXPECT_EQ(steps[3].calls[0].name, "get_weather");
    EXPECT_EQ(steps[3].calls[0].arguments, "{\"city\": \"Pa");
    ASSERT_EQ(steps[4].calls.size(), 1u);
    EXPECT_TRUE(steps[4].calls[0].id.empty());
    EXPECT_EQ(steps[4].calls[0].arguments, text.substr(pa, 7));
    EXPECT_EQ(out.calls.at(0).arguments, "{\"city\": \"Paris\", \"days\": 2}");
    EXPECT_EQ(out.content, "Sure,");
    // a list's calls, as forced calls are
    steps.clear();
    const std::string list = R"([{"name": "a", "parameters": {"q": 1}}, {"name": "b", "parameters": {}}])";
    streamed(ToolParser::json_list, list, {list.find(R"("q")") + 3, list.find(R"({}})") + 1}, &steps);
    EXPECT_EQ(steps[0].calls.at(0).arguments, "{\"q\"");
    ASSERT_EQ(steps[1].calls.size(), 2u);  // the rest of a's arguments, b's name and its '{'
    EXPECT_EQ(steps[1].calls[0].arguments, ": 1}");
    EXPECT_EQ(steps[1].calls[1].name, "b");
    EXPECT_EQ(steps[1].calls[1].arguments, "{");
    EXPECT_EQ(steps[2].calls.at(0).arguments, "}");
}

TEST(ToolCalls, StreamingHoldsBackOnlyWhatMayBeACall) {
    auto first_content = [](ToolParser p, const std::string& text) { return ToolCallReader(p).push(text, false).content; };
    // hermes: text before the tag is shown; a tail that may begin the tag is held, and blanks
    EXPECT_EQ(first_content(ToolParser::hermes, "Sure, "), "Sure,");
    EXPECT_EQ(first_content(ToolParser::hermes, "Sure, <tool"), "Sure,");
    EXPECT_EQ(first_content(ToolParser::hermes, "Sure, <tool_call>{\"na"), "Sure,");
    EXPECT_EQ(first_content(ToolParser::hermes, "a < b"), "a < b");
    EXPECT_EQ(first_content(ToolParser::hermes, "x <"), "x");
    // the other formats: held while the output may be a call (it starts with '{' / '[' or the tag)
    EXPECT_EQ(first_content(ToolParser::llama3_json, "  "), "");
    EXPECT_EQ(first_content(ToolParser::llama3_json, " {\"name"), "");
    EXPECT_EQ(first_content(ToolParser::llama3_json, "<|python"), "");
    EXPECT_EQ(first_content(ToolParser::llama3_json, "Hello"), "Hello");
    EXPECT_EQ(first_content(ToolParser::mistral, " [{\"na"), "");
    EXPECT_EQ(first_content(ToolParser::mistral, "[TOOL_"), "");
    EXPECT_EQ(first_content(ToolParser::mistral, "Sure"), "Sure");
    EXPECT_EQ(first_content(ToolParser::none, "<tool_call>"), "<tool_call>");
}

// Any split of any output, well-formed or not, gives what the whole output reads as; output
// with no call in it is content byte for byte.
TEST(ToolCalls, EverySplitReadsAsTheWhole) {
    const std::vector<std::pair<ToolParser, std::string>> outputs = {
        {ToolParser::hermes, "I'll check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"s\": \"}{\\\"\", \"n\": [1, {\"k\": null}]}}\n"
                             "</tool_call>\n<tool_call>\n{\"arguments\": {}, \"name\": \"b\"}\n</tool_call>\nDone."},
        {ToolParser::hermes, "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call><tool_call>broken</tool_call> a < b"},
        {ToolParser::llama3_json, "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"x\": \"]\"}}; {\"name\": \"b\", \"parameters\": {}};"},
        {ToolParser::llama3_json, " {\"answer\": {\"name\": 1}} "},
        {ToolParser::mistral, "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": [1, 2]}}, {\"name\": \"b\", \"arguments\": {\"y\""},
        {ToolParser::json_list, "[{\"name\": \"a\", \"parameters\": {}}, {\"name\": \"b\", \"parameters\": {\"z\": \"\\\\\"}}]"},
    };
    std::mt19937 rng(7);
    for (const auto& [p, text] : outputs) {
        const ToolOutput whole = parse_tool_calls(p, text);
        for (size_t n = 0; n <= text.size(); ++n) {  // every cut into two, and into single bytes
            expect_same(streamed(p, text, {n}), whole, std::string(tool_parser_name(p)) + " cut at " + std::to_string(n));
        }
        std::vector<size_t> bytes(text.size());
        std::iota(bytes.begin(), bytes.end(), size_t{0});
        expect_same(streamed(p, text, bytes), whole, "bytes");
        // random mutations: the split never matters, and text without a call is kept whole
        for (int trial = 0; trial < 300; ++trial) {
            std::string m = text;
            for (int k = 0; k < 3; ++k) {
                const size_t at = rng() % (m.size() + 1);
                switch (rng() % 3) {
                    case 0: m.insert(at, 1, "{}[]\",:;\\ <>x"[rng() % 14]); break;
                    case 1:
                        if (at < m.size()) m.erase(at, 1);
                        break;
                    default: m.resize(at); break;
                }
            }
            const ToolOutput mw = parse_tool_calls(p, m);
            if (mw.calls.empty()) {
                EXPECT_EQ(mw.content, m);
            }
            std::vector<size_t> cuts;
            for (size_t i = 0; i < m.size(); ++i) {
                if (rng() % 4 == 0) cuts.push_back(i);
            }
            expect_same(streamed(p, m, cuts), mw, m);
        }
    }
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
