// A reasoning model's output: thoughts and answer split whole and while streaming (every way of
// cutting the output into pieces gives the same split), the prompts that leave the model thinking,
// the response objects (reasoning_content beside content and tool calls), and --reasoning-parser.
#include "response_test_support.h"
#include "serve_test_support.h"

#include "tpserve/serve/messages_api.h"
#include "tpserve/serve/reasoning.h"
#include "tpserve/serve/response.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>

namespace tps::serve {
namespace {

using Json = nlohmann::json;

TEST(Reasoning, SplitWhole) {
    struct Case {
        std::string output;
        bool thinks;
        std::string reasoning, content;
        bool reasons, ended;
    };
    const Case cases[] = {
        {"Let me see.</think>\n\nIt is 4.", true, "Let me see.", "\n\nIt is 4.", true, true},
        {"<think>\nLet me see.\n</think>It is 4.", true, "\nLet me see.\n", "It is 4.", true, true},
        {"<think>Hmm", false, "Hmm", "", true, false},
        {"Still thinking", true, "Still thinking", "", true, false},
        {"</think>", true, "", "", true, true},
        {"It is 4.", false, "", "It is 4.", false, false},
        {"It is 4. <think>no</think>", false, "", "It is 4. <think>no</think>", false, false},
        {"a</think>b</think>c", true, "a", "b</think>c", true, true},
        {"", true, "", "", true, false},
    };
    for (const Case& c : cases) {
        const ReasoningSplit s = split_reasoning(c.output, c.thinks);
        EXPECT_EQ(s.reasoning, c.reasoning) << c.output;
        EXPECT_EQ(s.content, c.content) << c.output;
        EXPECT_EQ(s.reasons, c.reasons) << c.output;
        EXPECT_EQ(s.ended, c.ended) << c.output;
    }
}

// Streamed in random pieces, the pieces add up to the whole split, and nothing of a tag shows.
TEST(Reasoning, StreamedPiecesAddUpToTheWholeSplit) {
    const std::string outputs[] = {"<think>\nFirst, 2+2.\n</think>\n\nIt is 4.", "2+2 is 4 </thin k></think>Four.", "<thi",
                                   "<think", "<b>bold</b>", "no tags at all", "ends inside </thi", "</think></think>", "<<think>>"};
    std::mt19937 rng(7);
    for (const std::string& out : outputs) {
        for (const bool thinks : {true, false}) {
            const ReasoningSplit whole = split_reasoning(out, thinks);
            for (int trial = 0; trial < 50; ++trial) {
                ReasoningStream stream(thinks);
                std::string reasoning, content;
                for (size_t at = 0; at < out.size();) {
                    const size_t n = 1 + rng() % 4;
                    const bool last = at + n >= out.size();
                    const ReasoningStream::Piece p = stream.push(std::string_view(out).substr(at, n), last);
                    reasoning += p.reasoning;
                    content += p.content;
                    at += n;
                    // what was shown is never taken back
                    EXPECT_TRUE(whole.reasoning.starts_with(reasoning)) << out << " at " << at;
                    EXPECT_TRUE(whole.content.starts_with(content)) << out << " at " << at;
                }
                if (out.empty()) stream.push("", true);
                EXPECT_EQ(reasoning, whole.reasoning) << out << " thinks " << thinks;
                EXPECT_EQ(content, whole.content) << out << " thinks " << thinks;
            }
        }
    }
}

TEST(Reasoning, PromptsThatLeaveTheModelThinking) {
    EXPECT_TRUE(prompt_leaves_thinking("<|User|>2+2?<|Assistant|><think>\n"));         // DeepSeek-R1's newer template
    EXPECT_TRUE(prompt_leaves_thinking("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"));  // Qwen3, thinking
    EXPECT_FALSE(prompt_leaves_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n"));           // Qwen3, enable_thinking false
    EXPECT_TRUE(prompt_leaves_thinking(""));
}

TEST(Reasoning, ParserNames) {
    EXPECT_TRUE(reasoning_parser_named("auto", "{{ '<|Assistant|><think>\\n' }}...</think>"));
    EXPECT_FALSE(reasoning_parser_named("auto", "{{ '<|im_start|>assistant\\n' }}"));
    EXPECT_TRUE(reasoning_parser_named("deepseek_r1", ""));
    EXPECT_TRUE(reasoning_parser_named("qwen3", ""));
    EXPECT_FALSE(reasoning_parser_named("none", "</think>"));
    try {
        reasoning_parser_named("r1", "");
        ADD_FAILURE() << "accepted";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("--reasoning-parser: 'r1' is not deepseek_r1, qwen3, none or auto"), std::string::npos);
    }
}

GenerationRequest thinking_chat(bool tools = false) {
    GenerationRequest r;
    r.endpoint = Endpoint::chat;
    r.splits_reasoning = true;
    r.thinks = true;
    r.reads_tool_calls = tools;
    return r;
}

using test::events;
using test::piece;

struct Streamed {
    std::string reasoning, content, finish;
    std::vector<Json> calls;
};
Streamed stream(ResponseWriter& w, const std::vector<std::string>& pieces, const std::string& finish) {
    std::string sse;
    for (size_t i = 0; i < pieces.size(); ++i) sse += w.stream_piece(0, piece(pieces[i], i + 1 == pieces.size() ? finish : ""));
    Streamed s;
    for (const Json& e : events(sse)) {
        const Json& c = e["choices"][0];
        EXPECT_FALSE(c["delta"].contains("content") && c["delta"]["content"].is_null());
        if (c["delta"].contains("reasoning_content")) s.reasoning += c["delta"]["reasoning_content"].get<std::string>();
        if (c["delta"].contains("content")) s.content += c["delta"]["content"].get<std::string>();
        if (c["delta"].contains("tool_calls")) s.calls.push_back(c["delta"]["tool_calls"]);
        if (!c["finish_reason"].is_null()) s.finish = c["finish_reason"];
    }
    return s;
}

TEST(Reasoning, ResponsesCarryReasoningContent) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    const std::vector<std::string> pieces = {"<think>", "\nAdd them.", "\n</th", "ink>\n\nIt is", " 4."};
    ResponseWriter whole(thinking_chat(), "m", tok, 1);
    for (size_t i = 0; i < pieces.size(); ++i) whole.add(0, piece(pieces[i], i + 1 == pieces.size() ? "stop" : ""));
    const Json m = Json::parse(whole.whole({3, 5, 0}))["choices"][0]["message"];
    EXPECT_EQ(m["reasoning_content"], "\nAdd them.\n");
    EXPECT_EQ(m["content"], "\n\nIt is 4.");

    ResponseWriter streaming(thinking_chat(), "m", tok, 1);
    const Streamed s = stream(streaming, pieces, "stop");
    EXPECT_EQ(s.reasoning, "\nAdd them.\n");
    EXPECT_EQ(s.content, "\n\nIt is 4.");
    EXPECT_EQ(s.finish, "stop");

    // thoughts that never end: content null; streamed, no content at all
    ResponseWriter cut(thinking_chat(), "m", tok, 1);
    cut.add(0, piece("Let me th", "length"));
    const Json c = Json::parse(cut.whole({3, 3, 0}))["choices"][0]["message"];
    EXPECT_EQ(c["reasoning_content"], "Let me th");
    EXPECT_TRUE(c["content"].is_null());
    ResponseWriter cut_stream(thinking_chat(), "m", tok, 1);
    const Streamed cs = stream(cut_stream, {"Let me", " th"}, "length");
    EXPECT_EQ(cs.reasoning, "Let me th");
    EXPECT_EQ(cs.content, "");
    EXPECT_EQ(cs.finish, "length");

    // include_reasoning false: the thoughts are left out
    GenerationRequest quiet = thinking_chat();
    quiet.include_reasoning = false;
    ResponseWriter q(quiet, "m", tok, 1);
    q.add(0, piece("Hmm.</think>Yes.", "stop"));
    const Json qm = Json::parse(q.whole({3, 3, 0}))["choices"][0]["message"];
    EXPECT_FALSE(qm.contains("reasoning_content"));
    EXPECT_EQ(qm["content"], "Yes.");
    ResponseWriter qs(quiet, "m", tok, 1);
    const Streamed qss = stream(qs, {"Hmm.</think>", "Yes."}, "stop");
    EXPECT_EQ(qss.reasoning, "");
    EXPECT_EQ(qss.content, "Yes.");
}

// A call after the thoughts is read from the answer only; a call's text inside the thoughts is
// thought, not a call.
TEST(Reasoning, ToolCallsAreReadFromTheAnswer) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    const std::vector<std::string> pieces = {"I could <tool_call> later.", "</think>\n<tool_call>\n{\"name\": \"f\", ",
                                             "\"arguments\": {\"x\": 1}}\n</tool_call>"};
    ResponseWriter whole(thinking_chat(true), "m", tok, 1, ToolParser::hermes);
    for (size_t i = 0; i < pieces.size(); ++i) whole.add(0, piece(pieces[i], i + 1 == pieces.size() ? "stop" : ""));
    const Json c = Json::parse(whole.whole({3, 9, 0}))["choices"][0];
    EXPECT_EQ(c["finish_reason"], "tool_calls");
    EXPECT_EQ(c["message"]["reasoning_content"], "I could <tool_call> later.");
    EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["name"], "f");
    ResponseWriter streaming(thinking_chat(true), "m", tok, 1, ToolParser::hermes);
    const Streamed s = stream(streaming, pieces, "stop");
    EXPECT_EQ(s.reasoning, "I could <tool_call> later.");
    EXPECT_EQ(s.content, "");  // (the blank before the call is not content, as in the whole answer)
    EXPECT_TRUE(c["message"]["content"].is_null());
    ASSERT_FALSE(s.calls.empty());
    EXPECT_EQ(s.calls[0][0]["function"]["name"], "f");
    EXPECT_EQ(s.finish, "tool_calls");
}

// reasoning_tokens (chat's completion_tokens_details, as OpenAI's): the output tokens up to the
// one that ends the thoughts, whole or streamed; all of them when the thoughts never end; none
// when the prompt left no thinking and the output does not open with <think>.
TEST(Reasoning, ReasoningTokensCountTheThoughts) {
    const Tokenizer& tok = *test::fixture().tokenizer;
    auto count = [&](bool thinks, const std::vector<std::string>& pieces, bool streaming) {
        GenerationRequest r = thinking_chat();
        r.thinks = thinks;
        r.include_usage = true;
        ResponseWriter w(r, "m", tok, 1);
        std::string sse;
        for (size_t i = 0; i < pieces.size(); ++i) {
            const Delta d = piece(pieces[i], i + 1 == pieces.size() ? "length" : "", static_cast<int64_t>(i) + 1);
            if (streaming) sse += w.stream_piece(0, d);
            else w.add(0, d);
        }
        const Usage u{3, static_cast<int64_t>(pieces.size()), 0};
        const Json j = streaming ? events(w.stream_end(u)).back() : Json::parse(w.whole(u));
        return j["usage"]["completion_tokens_details"]["reasoning_tokens"].get<int64_t>();
    };
    for (const bool streaming : {false, true}) {
        EXPECT_EQ(count(true, {"Let", " me", " see", "</", "think>", "Four", "."}, streaming), 5);
        EXPECT_EQ(count(true, {"Let", " me", " see"}, streaming), 3);
        EXPECT_EQ(count(false, {"<think>", "Hm", "</think>", "Four"}, streaming), 3);
        EXPECT_EQ(count(false, {"Four", "."}, streaming), 0);
    }
}

// On a reasoning model an output format applies after the thoughts, unless the prompt closed them.
TEST(Reasoning, OutputFormatsWaitForTheThoughts) {
    ServedModel m = test::served();
    m.reasons = true;
    const auto allowed = [](const GenerationRequest& r) {
        size_t n = 0;
        for (const uint64_t w : r.sampling.constraint->restart()->allowed()) n += static_cast<size_t>(__builtin_popcountll(w));
        return n;
    };
    const size_t vocab = static_cast<size_t>(m.tokenizer->vocab_size());
    const GenerationRequest r = parse_chat_request(R"({"messages":[{"role":"user","content":"2+2?"}],"guided_choice":["yes","no"]})", m).at(0);
    EXPECT_TRUE(r.splits_reasoning && r.thinks && r.include_reasoning);
    EXPECT_GT(allowed(r), vocab * 9 / 10);
    const GenerationRequest closed = parse_chat_request(
        R"({"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"<think>\n\n</think>\n\n"}],
            "continue_final_message":true,"guided_choice":["yes","no"],"include_reasoning":false})", m).at(0);
    EXPECT_TRUE(closed.splits_reasoning && !closed.thinks && !closed.include_reasoning);
    EXPECT_LT(allowed(closed), 50u);
    m.reasons = false;
    const GenerationRequest plain = parse_chat_request(R"({"messages":[{"role":"user","content":"2+2?"}]})", m).at(0);
    EXPECT_FALSE(plain.splits_reasoning || plain.thinks);
    try {
        parse_chat_request(R"({"messages":[{"role":"user","content":"2+2?"}],"include_reasoning":"no"})", m);
        ADD_FAILURE() << "accepted";
    } catch (const ApiError& e) {
        EXPECT_NE(std::string(e.what()).find("'include_reasoning' must be a boolean"), std::string::npos) << e.what();
    }
}

// vLLM's thinking_token_budget (and Anthropic's thinking.budget_tokens): the sampler forces the
// tokens of "</think>" after that many; refused where there are no thoughts to bound.
TEST(Reasoning, AThinkingBudgetReachesTheSampler) {
    ServedModel m = test::served();
    m.reasons = true;
    const std::vector<int32_t> end = m.tokenizer->encode("</think>", false);
    const GenerationRequest r =
        parse_chat_request(R"({"messages":[{"role":"user","content":"2+2?"}],"thinking_token_budget":64})", m).at(0);
    EXPECT_EQ(r.sampling.thinking_budget, 64);
    EXPECT_EQ(r.sampling.think_end, end);
    const GenerationRequest anthropic = parse_messages_request(
        R"({"model":"smollm2","max_tokens":100,"messages":[{"role":"user","content":"2+2?"}],"thinking":{"type":"enabled","budget_tokens":32}})", m).at(0);
    EXPECT_EQ(anthropic.sampling.thinking_budget, 32);
    // none: -1, a prompt that closed the thoughts, a model that does not reason (Messages: ignored)
    EXPECT_EQ(parse_chat_request(R"({"messages":[{"role":"user","content":"a"}],"thinking_token_budget":-1})", m).at(0).sampling.thinking_budget, -1);
    const GenerationRequest closed = parse_chat_request(
        R"({"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"<think>\n\n</think>\n\n"}],
            "continue_final_message":true,"thinking_token_budget":8})", m).at(0);
    EXPECT_EQ(closed.sampling.thinking_budget, -1);
    auto refused = [&](const std::string& body, bool chat, const char* words) {
        try {
            if (chat) parse_chat_request(body, m);
            else parse_completion_request(body, m);
            ADD_FAILURE() << "accepted: " << body;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.param(), "thinking_token_budget") << e.what();
            EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
        }
    };
    refused(R"({"messages":[{"role":"user","content":"a"}],"thinking_token_budget":-2})", true, "between -1 and");
    refused(R"({"messages":[{"role":"user","content":"a"}],"thinking_token_budget":"8"})", true, "integer");
    refused(R"({"prompt":"a","thinking_token_budget":8})", false, "reasoning model's thoughts in chat");
    m.reasons = false;
    refused(R"({"messages":[{"role":"user","content":"a"}],"thinking_token_budget":8})", true, "reasoning model's thoughts in chat");
    EXPECT_EQ(parse_messages_request(R"({"model":"smollm2","max_tokens":9,"messages":[{"role":"user","content":"a"}],
                                         "thinking":{"type":"enabled","budget_tokens":32}})", m).at(0).sampling.thinking_budget, -1);
}

}  // namespace
}  // namespace tps::serve
