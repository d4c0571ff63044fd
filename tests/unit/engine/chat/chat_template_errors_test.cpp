// How tps::ChatTemplate fails: constructs outside the supported subset are named with their line at
// parse time, malformed templates say what is unterminated and where it opened, raise_exception()
// reaches the caller as an InputError, and mangled real templates never crash, only throw tps::Error.
#include "chat_test_support.h"

#include "tpserve/common/error.h"
#include "tpserve/engine/chat_template.h"

#include <gtest/gtest.h>

#include <random>

namespace tps {
namespace {

using nlohmann::ordered_json;

// The InputError message of parsing `source`, or "" when it parses.
std::string parse_error(const std::string& source) {
    try {
        ChatTemplate t(source, "tpl");
        return "";
    } catch (const InputError& e) {
        return e.what();
    }
}

std::string render_error(const std::string& source, const ordered_json& context) {
    const ChatTemplate t(source, "tpl");
    try {
        t.render(context);
        return "";
    } catch (const InputError& e) {
        return e.what();
    }
}

struct ParseErrorCase {
    const char* source;
    const char* expected;  // the message, starting with origin and line
};

class ParseError : public ::testing::TestWithParam<ParseErrorCase> {};

TEST_P(ParseError, NamesTheConstructAndItsLine) {
    const std::string message = parse_error(GetParam().source);
    EXPECT_NE(message.find(GetParam().expected), std::string::npos)
        << "source: " << GetParam().source << "\nmessage: " << message;
}

INSTANTIATE_TEST_SUITE_P(
    Unsupported, ParseError,
    ::testing::Values(
        ParseErrorCase{"a\nb\n{% macro greet(x) %}hi{% endmacro %}",
                       "tpl:3: '{% macro %}' is not supported by tpserve's chat templates"},
        ParseErrorCase{"{% include 'other.jinja' %}", "tpl:1: '{% include %}' is not supported"},
        ParseErrorCase{"{% extends 'base' %}", "tpl:1: '{% extends %}' is not supported"},
        ParseErrorCase{"\n{% call foo() %}{% endcall %}", "tpl:2: '{% call %}' is not supported"},
        ParseErrorCase{"{% filter upper %}x{% endfilter %}", "tpl:1: '{% filter %}' is not supported"},
        ParseErrorCase{"\n\n{% raw %}{{ x }}{% endraw %}", "tpl:3: '{% raw %}' blocks are not supported"},
        ParseErrorCase{"{% frobnicate %}", "tpl:1: unknown tag '{% frobnicate %}'"},
        ParseErrorCase{"{% do x.append(1) %}", "tpl:1: unknown tag '{% do %}'"},
        ParseErrorCase{"{{ x }}\n{{ x | frobnicate }}", "tpl:2: No filter named 'frobnicate'."},
        ParseErrorCase{"{{ xs | sort }}", "tpl:1: the filter 'sort' is not supported by tpserve's chat templates"},
        ParseErrorCase{"{% if true %}{{ x | safe }}{% endif %}", "tpl:1: the filter 'safe' is not supported"},
        ParseErrorCase{"{{ x is frobbed }}", "tpl:1: No test named 'frobbed'."},
        ParseErrorCase{"{{ x is escaped }}", "tpl:1: the test 'escaped' is not supported"},
        ParseErrorCase{"{% for x in xs recursive %}{% endfor %}", "tpl:1: recursive for loops are not supported"},
        ParseErrorCase{"{{ f(*args) }}", "tpl:1: '*' argument unpacking is not supported"},
        ParseErrorCase{"{{ f(**kw) }}", "tpl:1: '**' argument unpacking is not supported"},
        ParseErrorCase{"{{ '\\N{BULLET}' }}", "tpl:1: \\N{...} escapes are not supported"},
        ParseErrorCase{"{% set x | upper %}a{% endset %}", "tpl:1: filtered block sets are not supported"}));

INSTANTIATE_TEST_SUITE_P(
    Malformed, ParseError,
    ::testing::Values(
        ParseErrorCase{"hello {{ name", "tpl:1: unterminated '{{': the template ends before its '}}'"},
        ParseErrorCase{"a\n{% if x", "tpl:2: unterminated '{%': the template ends before its '%}'"},
        ParseErrorCase{"a {# never closed", "tpl:1: unterminated comment"},
        ParseErrorCase{"\n{{ 'abc }}", "tpl:2: unterminated string literal"},
        ParseErrorCase{"{% for m in messages %}\n{{ m }}\n",
                       "tpl:1: '{% for %}' is never closed: the template ends before '{% endfor %}' or "
                       "'{% else %}'"},
        ParseErrorCase{"{% if a %}x{% elif b %}y", "tpl:1: '{% if %}' is never closed"},
        ParseErrorCase{"x\n{% endif %}", "tpl:2: unknown tag '{% endif %}'"},
        ParseErrorCase{"{% for x in y %}{% endif %}{% endfor %}",
                       "tpl:1: unexpected '{% endif %}' inside '{% for %}' opened at line 1"},
        ParseErrorCase{"{% break %}", "tpl:1: '{% break %}' outside a for loop"},
        ParseErrorCase{"{% for x in y %}{% else %}{% continue %}{% endfor %}", "'{% continue %}' outside a for loop"},
        ParseErrorCase{"{{ (1 + 2 }}", "tpl:1: unexpected '}', expected ')'"},
        ParseErrorCase{"{{ 1 + ) }}", "tpl:1: unexpected ')'"},
        ParseErrorCase{"{{ }}", "tpl:1: expected an expression, got '}}'"},
        ParseErrorCase{"{{ 1 2 }}", "tpl:1: expected '}}' to close '{{', got a number"},
        ParseErrorCase{"{{ a ! b }}", "tpl:1: unexpected character '!'"},
        ParseErrorCase{"{% set true = 1 %}", "tpl:1: '{% set %}' can only assign to names, not 'true'"},
        ParseErrorCase{"{% for in xs %}{% endfor %}", "tpl:1: expected 'in' in the for loop"},
        ParseErrorCase{"{{ x is defined is defined }}", "tpl:1: You cannot chain multiple tests with is"},
        ParseErrorCase{"{{ f(a=1, 2) }}", "tpl:1: a positional argument follows a keyword argument"},
        ParseErrorCase{"{{ 99999999999999999999 }}", "tpl:1: the number 99999999999999999999 is out of range"},
        ParseErrorCase{"{{ x.'a' }}", "tpl:1: expected an attribute name after '.', got a string"}));

TEST(ParseError, InvalidUtf8IsRejected) {
    EXPECT_NE(parse_error("ok \xff\xfe").find("tpl: the chat template is not valid UTF-8"), std::string::npos);
}

TEST(ParseError, DeepNestingIsAnErrorNotAStackOverflow) {
    const std::string parens = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
    EXPECT_NE(parse_error(parens).find("nested too deeply"), std::string::npos);
    EXPECT_NE(parse_error("{{ " + std::string(5000, '-') + "1 }}").find("nested too deeply"), std::string::npos);
    std::string ifs;
    for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
    EXPECT_NE(parse_error(ifs).find("nested too deeply"), std::string::npos);
}

TEST(RenderError, DeepValuesAreAnErrorNotAStackOverflow) {
    const std::string build = "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}"
                              "{% endfor %}";
    EXPECT_EQ(render_error(build, ordered_json::object()), "tpl:1: a value is nested more than 1000 levels deep");
    // A namespace holding itself, or a long chain of namespaces, is freed when the render ends.
    EXPECT_EQ(render_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", ordered_json::object()),
              "tpl:1: a value is nested more than 1000 levels deep");
    const ChatTemplate chain("{% set ns = namespace(x=0) %}{% for i in range(100000) %}"
                             "{% set ns.x = namespace(x=ns.x) %}{% endfor %}done",
                             "tpl");
    EXPECT_EQ(chain.render(ordered_json::object()), "done");
    ordered_json deep = ordered_json::array();
    for (int i = 0; i < 600; ++i) deep = ordered_json::array({deep});
    const ChatTemplate t("x", "tpl");
    try {
        t.render(ordered_json{{"deep", deep}});
        FAIL() << "expected an InputError";
    } catch (const InputError& e) {
        EXPECT_STREQ(e.what(), "tpl: the context is nested more than 512 levels deep");
    }
}

TEST(RenderError, RaiseExceptionReachesTheCallerWithTheTemplatesMessage) {
    const std::string tpl = chat_test::read_template("mistral-7b-instruct-v0.1");
    const ChatTemplate t(tpl, "tokenizer_config.json");
    const auto context = ordered_json::parse(R"({"bos_token": "<s>", "eos_token": "</s>",
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})");
    try {
        t.render(context);
        FAIL() << "expected an InputError";
    } catch (const InputError& e) {
        EXPECT_STREQ(e.what(),
                     "tokenizer_config.json:1: Conversation roles must alternate user/assistant/user/assistant/...");
    }
}

TEST(RenderError, NamesTheLineThatFailed) {
    EXPECT_EQ(render_error("line 1\n{% if x %}\n{{ y.z }}\n{% endif %}", ordered_json{{"x", true}}),
              "tpl:3: 'y' is undefined");
    EXPECT_EQ(render_error("{% set ns = namespace() %}\n\n{% set ns.a = 1 + none %}", ordered_json::object()),
              "tpl:3: unsupported operand type(s) for +: 'int' and 'NoneType'");
    EXPECT_EQ(render_error("{{ 'a' * 'b' }}", ordered_json::object()),
              "tpl:1: can't multiply sequence by non-int of type 'str'");
    EXPECT_EQ(render_error("{{ '%s' % 1 }}", ordered_json::object()),
              "tpl:1: printf-style formatting (str % value) is not supported in chat templates here");
    EXPECT_EQ(render_error("{{ 2 ** 70 }}", ordered_json::object()),
              "tpl:1: integer overflow: chat templates compute with 64-bit integers here");
    EXPECT_EQ(render_error("{{ 'x' * 100000000 }}", ordered_json::object()),
              "tpl:1: string repetition result is too large");
    EXPECT_EQ(render_error("{{ [1, 2] | map }}", ordered_json::object()), "tpl:1: map requires a filter argument");
    EXPECT_EQ(render_error("{{ 'x' | trim(1, 2) }}", ordered_json::object()),
              "tpl:1: trim() takes at most 1 positional argument (2 given)");
    EXPECT_EQ(render_error("{{ 'x'.strip(chars=1) }}", ordered_json::object()),
              "tpl:1: strip() got an unexpected keyword argument 'chars'");
    EXPECT_EQ(render_error("{{ [1] | select('frobbed') | list }}", ordered_json::object()),
              "tpl:1: No test named 'frobbed'.");
}

// ---- fuzz-ish: mangled real templates either parse and render, or throw tps::Error; nothing else.

std::string mangle(const std::string& source, std::mt19937& rng) {
    static const std::string kPieces[] = {"{{", "}}", "{%", "%}", "{#", "#}", "-", "+", "'", "\"", "(", ")", "[",
                                          "]",  "{",  "}",  "|",  ".",  ",",  ":", "\n", " ", "\\", "endif",
                                          "endfor", "if ", "for ", "in ", "is ", "not ", "~", "\xc3\xa9", "0"};
    std::string s = source;
    const auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n)(rng); };
    const size_t edits = 1 + pick(3);
    for (size_t e = 0; e < edits; ++e) {
        const size_t at = pick(s.size());
        switch (pick(4)) {
            case 0: s.resize(at); break;  // truncate
            case 1: s.erase(at, pick(16)); break;
            case 2: s.insert(at, kPieces[pick(std::size(kPieces) - 1)]); break;
            case 3: {
                const size_t from = pick(s.size());
                s.insert(at, s.substr(from, pick(24)));  // duplicate a span
                break;
            }
            default: s.insert(at, 1, static_cast<char>(pick(255))); break;  // any byte, invalid UTF-8 included
        }
    }
    return s;
}

TEST(Fuzz, MangledTemplatesNeverCrash) {
    std::mt19937 rng(20250107);  // seeded: a failure reproduces
    std::vector<std::string> sources;
    for (const auto& c : chat_test::load_references()["cases"]) {
        if (c.contains("source")) sources.push_back(c["source"]);
    }
    for (const char* name : {"smollm2-135m-instruct", "qwen2.5-7b-instruct", "llama-3.1-8b-instruct",
                             "llama-3.2-1b-instruct", "llama-2-7b-chat", "mistral-7b-instruct-v0.1",
                             "mistral-7b-instruct-v0.3"}) {
        sources.push_back(chat_test::read_template(name));
    }
    const auto context = ordered_json::parse(R"({"bos_token": "<s>", "eos_token": "</s>",
        "add_generation_prompt": true, "tools": null, "documents": null,
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi {{ x }}"},
                     {"role": "assistant", "content": "yo", "tool_calls": [{"id": "abcdefghi", "type": "function",
                      "function": {"name": "f", "arguments": {"a": 1}}}]},
                     {"role": "tool", "content": "42"}, {"role": "user", "content": "more"}]})");
    int parsed = 0;
    int rendered = 0;
    for (int i = 0; i < 3000; ++i) {
        const std::string source = mangle(sources[static_cast<size_t>(i) % sources.size()], rng);
        try {
            ChatTemplate t(source, "fuzz");
            t.set_clock(chat_test::fixed_clock);
            ++parsed;
            t.render(context);
            ++rendered;
        } catch (const Error&) {
            // the expected outcome for a broken template
        } catch (const std::exception& e) {
            ADD_FAILURE() << "non-tps exception " << e.what() << " for:\n" << source;
        }
    }
    // The mangling must leave some templates valid, or this test exercises only the lexer.
    EXPECT_GT(parsed, 300);
    EXPECT_GT(rendered, 100);
}

}  // namespace
}  // namespace tps
