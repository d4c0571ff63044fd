// generate(): the text it streams is the decoded tokens (with or without stop strings that never
// match), stop strings split across pieces are found, the context bounds the output, and a
// sequence id in use is refused without touching it.
#include "tpserve/common/error.h"
#include "tpserve/engine/generate.h"
#include "tpserve/engine/model_files.h"

#include <gtest/gtest.h>

namespace tps {
namespace {

TEST(StopMatcher, FindsStopsAcrossPiecesAndHoldsBackOnlyWhatCouldMatch) {
    StopMatcher m({"</s>", "STOP"});
    std::string out;
    for (const char* piece : {"Hello <", "/", "s"}) out += m.push(piece);
    EXPECT_EQ(out, "Hello ");  // "</s" might still become "</s>"
    out += m.push("> after");
    EXPECT_TRUE(m.done());
    EXPECT_EQ(out, "Hello ");
    StopMatcher none({"xyz"});
    std::string all;  // one push at a time: the order of a + b + c's operands is unspecified
    for (const char* piece : {"ab", "cx", "y", "w"}) all += none.push(piece);
    all += none.finish();
    EXPECT_EQ(all, "abcxyw");
    StopMatcher utf8({"abcd"});
    const std::string s = utf8.push("é");  // never half a character, even while holding back
    EXPECT_TRUE(s.empty() || s == "é");
}

// vLLM's include_stop_str_in_output: the stop string met ends the text; the first one in the
// text wins, and of two starting there the longer.
TEST(StopMatcher, IncludedStopEndsTheText) {
    StopMatcher m({"END", "ENDING", "x"}, true);
    std::string out;
    for (const char* piece : {"the EN", "DING and x"}) out += m.push(piece);
    EXPECT_TRUE(m.done());
    EXPECT_EQ(out, "the ENDING");
    EXPECT_EQ(m.finish(), "");
    StopMatcher first({"b", "abc"}, true);
    EXPECT_EQ(first.push("xabcb"), "xabc");
}

struct Tiny {
    ModelFiles files = ModelFiles::open(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/smollm2");
    std::unique_ptr<Backend> be = make_cpu_backend(1);
    std::unique_ptr<LlamaModel> model(int64_t kv_tokens = 512) {
        ModelOptions opt;
        opt.kv_tokens = kv_tokens;
        return std::make_unique<LlamaModel>(files.desc, load_llama_weights(files.weights, files.desc, {}), *be, opt);
    }
};

TEST(Generate, StreamedTextIsTheDecodedTokensWithOrWithoutStopStrings) {
    Tiny t;
    auto m = t.model();
    const auto prompt = t.files.encode_prompt("Emoji: 😀😀😀 Chinese: 你好世界", false);
    for (int n : {1, 3, 6, 12}) {
        for (bool with_stop : {false, true}) {
            GenerateOptions o;
            o.max_tokens = n;
            if (with_stop) o.stop = {"zzzzzzzz"};
            std::string text;
            const GenerateResult r = generate(*m, *t.files.tokenizer, prompt, o, [&](std::string_view p) { text += p; });
            EXPECT_EQ(text, t.files.tokenizer->decode(r.tokens, true)) << n << " " << with_stop;
        }
    }
}

TEST(Generate, TheContextBoundsTheOutputAndSequencesInUseAreRefused) {
    Tiny t;
    auto m = t.model(32);  // two KV blocks
    const auto prompt = t.files.encode_prompt("hello there, how are you today", false);
    GenerateOptions o;
    o.max_tokens = 100;
    const GenerateResult r = generate(*m, *t.files.tokenizer, prompt, o, [](std::string_view) {});
    EXPECT_EQ(r.finish_reason, "length");
    EXPECT_EQ(r.prompt_tokens + r.generated_tokens, 32);
    std::vector<int32_t> long_prompt(40, prompt[0]);
    EXPECT_THROW(generate(*m, *t.files.tokenizer, long_prompt, o, [](std::string_view) {}), UsageError);
    m->forward({{7, {1, 2}, 0, false}});
    o.seq_id = 7;
    EXPECT_THROW(generate(*m, *t.files.tokenizer, prompt, o, [](std::string_view) {}), UsageError);
    EXPECT_EQ(m->length(7), 2);  // untouched
}

}  // namespace
}  // namespace tps
