// vLLM's request fields beyond the OpenAI API: allowed_token_ids and bad_words as a filter (alone
// and beside an output format), truncate_prompt_tokens, the flags, and every field that is not
// offered refused with a 400 naming it.
#include "serve_test_support.h"

#include <gtest/gtest.h>

#include <set>

namespace tps::serve {
namespace {

GenerationRequest one(std::string_view body, const ServedModel& m) {
    auto c = parse_completion_request(body, m);
    EXPECT_EQ(c.size(), 1u);
    return c.at(0);
}

std::set<int32_t> allowed(const std::vector<uint64_t>& mask) {
    std::set<int32_t> out;
    for (size_t w = 0; w < mask.size(); ++w) {
        for (int b = 0; b < 64; ++b) {
            if ((mask[w] >> b) & 1) out.insert(static_cast<int32_t>(w * 64 + static_cast<size_t>(b)));
        }
    }
    return out;
}

TEST(VllmFields, AllowedTokenIdsAreAllThatMayCome) {
    const ServedModel m = test::served();
    const GenerationRequest r = one(R"({"prompt":"a","allowed_token_ids":[5,9,130]})", m);
    ASSERT_NE(r.sampling.constraint, nullptr);
    auto c = r.sampling.constraint->restart();
    EXPECT_EQ(allowed(c->allowed()), (std::set<int32_t>{5, 9, 130}));
    c->accept(9);
    EXPECT_EQ(allowed(c->allowed()), (std::set<int32_t>{5, 9, 130}));
    EXPECT_THROW(c->accept(10), ConstraintError);
    EXPECT_FALSE(c->finished());

    // beside an output format: what both allow ("yes" spelled only by these tokens)
    const std::vector<int32_t> yes = m.tokenizer->encode("yes", false);
    std::string ids;
    for (const int32_t t : yes) {
        if (!ids.empty()) ids += ',';
        ids += std::to_string(t);
    }
    std::string body = R"({"prompt":"a","guided_choice":["yes","no"],"allowed_token_ids":[)";
    body += ids;
    body += "]}";
    const GenerationRequest both = one(body, m);
    auto b = both.sampling.constraint->restart();
    for (const int32_t t : yes) {
        ASSERT_EQ(allowed(b->allowed()), (std::set<int32_t>{t}));
        b->accept(t);
    }
    EXPECT_TRUE(b->finished());
}

TEST(VllmFields, BadWordsNeverComeWhole) {
    const ServedModel m = test::served();
    const std::vector<int32_t> word = m.tokenizer->encode("Hello world", false);
    ASSERT_GE(word.size(), 2u);
    std::string one_token;  // a word that is one token of the fixture's small vocabulary
    for (const char* w : {"the", "a", "e", "t"}) {
        if (one_token.empty() && m.tokenizer->encode(w, false).size() == 1) one_token = w;
    }
    ASSERT_FALSE(one_token.empty());
    const std::vector<int32_t> single = m.tokenizer->encode(one_token, false);
    std::string body = R"({"prompt":"a","bad_words":["Hello world","  )";
    body += one_token;
    body += R"("]})";
    const GenerationRequest r = one(body, m);
    auto c = r.sampling.constraint->restart();
    EXPECT_FALSE(allowed(c->allowed()).contains(single[0]));  // a one-token word: never
    EXPECT_TRUE(allowed(c->allowed()).contains(word.back()));  // the last token alone is fine
    for (size_t i = 0; i + 1 < word.size(); ++i) c->accept(word[i]);
    EXPECT_FALSE(allowed(c->allowed()).contains(word.back()));  // ... but not after the rest of the word
    c->accept(word[0] == 5 ? 6 : 5);
    EXPECT_TRUE(allowed(c->allowed()).contains(word.back()));
}

TEST(VllmFields, TruncationAndFlags) {
    const ServedModel m = test::served();
    const std::vector<int32_t> prompt = m.tokenizer->encode("one two three four five six seven", true);
    ASSERT_GT(prompt.size(), 3u);
    const GenerationRequest r = one(R"({"prompt":"one two three four five six seven","truncate_prompt_tokens":3,
        "include_stop_str_in_output":true,"return_tokens_as_token_ids":true,"stop":["x"]})", m);
    EXPECT_EQ(r.prompt, std::vector<int32_t>(prompt.end() - 3, prompt.end()));
    EXPECT_TRUE(r.include_stop_str && r.token_ids_as_text);
    EXPECT_EQ(one(R"({"prompt":"one two","truncate_prompt_tokens":-1})", m).prompt, m.tokenizer->encode("one two", true));
    EXPECT_EQ(one(R"({"prompt":"one two"})", m).sampling.constraint, nullptr);
}

TEST(VllmFields, ContinuousUsageStatsComeWithIncludeUsage) {
    const ServedModel m = test::served();
    EXPECT_TRUE(one(R"({"prompt":"a","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}})", m)
                    .continuous_usage);
    // (as vLLM's: without include_usage there is no usage at all)
    EXPECT_FALSE(one(R"({"prompt":"a","stream":true,"stream_options":{"continuous_usage_stats":true}})", m).continuous_usage);
    EXPECT_FALSE(one(R"({"prompt":"a","stream":true,"stream_options":{"include_usage":true}})", m).continuous_usage);
}

TEST(VllmFields, PromptLogprobsScoreThePrompt) {
    const ServedModel m = test::served();
    const GenerationRequest r = one(R"({"prompt":"one two","prompt_logprobs":3})", m);
    EXPECT_EQ(r.prompt_logprobs, 3);
    EXPECT_TRUE(r.scores_prompt());
    EXPECT_EQ(r.score_top(), 3);
    EXPECT_EQ(r.logprobs, -1);  // (the output's are another field)
    EXPECT_EQ(one(R"({"prompt":"one two","prompt_logprobs":0,"echo":true,"logprobs":5})", m).score_top(), 5);
    EXPECT_EQ(one(R"({"prompt":"one two","prompt_logprobs":7,"logprobs":5})", m).score_top(), 7);
    EXPECT_EQ(one(R"({"prompt":"one two","prompt_logprobs":null})", m).prompt_logprobs, -1);
    const auto chat = parse_chat_request(R"({"messages":[{"role":"user","content":"hi"}],"prompt_logprobs":2})", m);
    EXPECT_EQ(chat.at(0).prompt_logprobs, 2);
}

TEST(VllmFields, PriorityOrdersTheQueueWhenTheServerSaysSo) {
    ServedModel m = test::served();
    EXPECT_EQ(one(R"({"prompt":"a","priority":0})", m).priority, 0);  // (0 is every request's under fcfs)
    m.priority_scheduling = true;
    EXPECT_EQ(one(R"({"prompt":"a","priority":-3})", m).priority, -3);
    EXPECT_EQ(one(R"({"prompt":"a"})", m).priority, 0);
    EXPECT_THROW(one(R"({"prompt":"a","priority":1.5})", m), ApiError);
}

TEST(VllmFields, WhatIsNotOfferedIsRefused) {
    const ServedModel m = test::served();
    const std::pair<const char*, const char*> cases[] = {
        {R"({"prompt":"a","use_beam_search":true})", "'use_beam_search' is not supported"},
        {R"({"prompt":"a","prompt_logprobs":-1})", "'prompt_logprobs' -1 (the whole vocabulary) is not offered"},
        {R"({"prompt":"a","prompt_logprobs":21})", "'prompt_logprobs' must be between 0 and 20"},
        {R"({"prompt":"a","prompt_logprobs":"2"})", "'prompt_logprobs' must be an integer"},
        {R"({"prompt":"a","prompt_logprobs":2,"stream":true})", "'prompt_logprobs' is not available with 'stream': true"},
        {R"({"prompt":"a","chat_template":"{{ messages }}"})", "'chat_template' is not accepted in a request"},
        {R"({"prompt":"a","priority":1})", "'priority' needs the server started with --scheduling-policy priority"},
        {R"({"prompt":"a","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":1}})",
         "'continuous_usage_stats' must be a boolean"},
        {R"({"prompt":"a","truncate_prompt_tokens":0})", "'truncate_prompt_tokens' must be at least 1"},
        {R"({"prompt":"a","truncate_prompt_tokens":-2})", "'truncate_prompt_tokens'"},
        {R"({"prompt":"a","allowed_token_ids":[]})", "'allowed_token_ids' must be a non-empty array"},
        {R"({"prompt":"a","allowed_token_ids":[99999999]})", "'allowed_token_ids': 99999999 is not a token id"},
        {R"({"prompt":"a","allowed_token_ids":"5"})", "'allowed_token_ids' must be a non-empty array"},
        {R"({"prompt":"a","bad_words":"x"})", "'bad_words' must be an array of strings"},
        {R"({"prompt":"a","bad_words":["  "]})", "'bad_words' must hold non-blank strings"},
        {R"({"prompt":"a","include_stop_str_in_output":1})", "'include_stop_str_in_output' must be a boolean"},
    };
    for (const auto& [body, words] : cases) {
        try {
            parse_completion_request(body, m);
            ADD_FAILURE() << "accepted: " << body;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.status(), 400) << body;
            EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << body << "\n" << e.what();
        }
    }
    // the defaults vLLM clients send are fine
    EXPECT_NO_THROW(parse_completion_request(R"({"prompt":"a","use_beam_search":false,"priority":0,"prompt_logprobs":null})", m));
}

}  // namespace
}  // namespace tps::serve
