// Grammars over real vocabularies: token bytes against the tokenizer's own decoding (which equals
// Hugging Face tokenizers'), the allowed-token mask against a token-by-token check, and random
// walks through the mask that must end in text the grammar admits.
#include "tpserve/common/error.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/grammar_constraint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

namespace tps::structured {
namespace {

const std::filesystem::path kModels = std::filesystem::path(TPS_SOURCE_DIR) / "tests/fixtures/models";

class Vocabularies : public ::testing::TestWithParam<const char*> {
protected:
    const Tokenizer& tok() {
        static std::map<std::string, Tokenizer> loaded;
        auto it = loaded.find(GetParam());
        if (it == loaded.end()) it = loaded.emplace(GetParam(), Tokenizer::from_hf_dir(kModels / GetParam())).first;
        return it->second;
    }
    std::shared_ptr<const TokenBytes> bytes() { return std::make_shared<TokenBytes>(tok()); }
    std::vector<int32_t> stops() { return {tok().eos_id().value_or(0)}; }
};

// Decoding any run of ordinary tokens gives their bytes joined (valid UTF-8 runs; the first
// token's as at the start).
TEST_P(Vocabularies, TokenBytesJoinToTheDecodedText) {
    const Tokenizer& t = tok();
    const auto vocab = bytes();
    std::mt19937 rng(11);
    std::vector<int32_t> ordinary;
    for (const auto& e : vocab->sorted()) ordinary.push_back(e.token);
    ASSERT_GT(ordinary.size(), 100u);
    int compared = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::vector<int32_t> ids;
        std::string joined;
        const int n = 1 + static_cast<int>(rng() % 6);
        for (int i = 0; i < n; ++i) {
            const int32_t id = ordinary[rng() % ordinary.size()];
            if (ids.empty() && vocab->changes_at_start(id)) continue;
            ids.push_back(id);
            joined += vocab->of(id);
        }
        if (ids.empty()) continue;
        const std::string decoded = t.decode(ids, true);
        if (decoded.find("\xEF\xBF\xBD") != std::string::npos) continue;  // a cut character: repaired
        EXPECT_EQ(decoded, joined) << "trial " << trial;
        ++compared;
    }
    EXPECT_GT(compared, 100);
}

// The mask equals advancing a copy of the state through each token on its own.
TEST_P(Vocabularies, MaskEqualsTokenByTokenCheck) {
    const auto vocab = bytes();
    const auto grammar = json_schema_grammar(R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
        "n": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a b", "ü"]}}}, "required": ["name", "n"]})");
    GrammarTokens tokens(grammar, vocab, stops());
    for (const std::string prefix : {"", "{", "{\"na", "{\"name\": \"x", "{\"name\":\"abcdefgh", "{\"name\":\"\",\"n\":12",
                                     "{\"name\":\"\",\"n\":1,\"tags\":[\"a", "{\"name\":\"\",\"n\":1}"}) {
        GrammarState state(grammar);
        ASSERT_TRUE(state.advance(prefix)) << prefix;
        const bool at_start = prefix.empty();
        const auto mask = tokens.allowed(state, at_start);
        int allowed = 0;
        for (int32_t t = 0; t < vocab->vocab_size(); ++t) {
            // (at the start, a token that reads differently there is taken as it reads there)
            const std::string_view b = at_start && vocab->changes_at_start(t) ? vocab->at_start(t) : vocab->of(t);
            GrammarState s = state;
            bool expect = !b.empty() && s.advance(b);
            if (tokens.is_stop(t)) expect = state.complete();
            ASSERT_EQ(mask_has(*mask, t), expect) << "prefix '" << prefix << "' token " << t << " '" << b << "'";
            allowed += expect;
        }
        EXPECT_GT(allowed, 0) << prefix;
    }
}

// At the start of the output a SentencePiece token "▁{" reads "{" (the decoder drops the space):
// the mask takes it as it reads there, and the walk's text is what decode() gives.
TEST_P(Vocabularies, TokensThatReadDifferentlyAtTheStart) {
    const auto vocab = bytes();
    const auto grammar = regex_grammar("[a-z ]{1,12}");
    GrammarTokens tokens(grammar, vocab, stops());
    const auto first = tokens.allowed(GrammarState(grammar), true);
    const auto later = tokens.allowed(GrammarState(grammar), false);
    int differ = 0;
    for (const int32_t t : vocab->start_tokens()) {
        const std::string_view there = vocab->at_start(t), inside = vocab->of(t);
        GrammarState a(grammar), b(grammar);
        EXPECT_EQ(mask_has(*first, t), !there.empty() && a.advance(there)) << t;
        EXPECT_EQ(mask_has(*later, t), b.advance(inside)) << t;
        differ += mask_has(*first, t) != mask_has(*later, t);
    }
    if (std::string(GetParam()) == "llama2" || std::string(GetParam()) == "mistral") {
        EXPECT_GT(vocab->start_tokens().size(), 10u);  // SentencePiece: "▁..." tokens
    } else {
        EXPECT_TRUE(vocab->start_tokens().empty());  // byte-level BPE drops nothing
    }
    (void)differ;
}

// Random walks: each token drawn from the mask; the text must be admitted when the walk ends.
TEST_P(Vocabularies, RandomWalksStayInsideTheGrammar) {
    const Tokenizer& t = tok();
    const auto vocab = bytes();
    const std::string schema = R"({"type": "object", "properties": {"ok": {"type": "boolean"},
        "kind": {"enum": ["cat", "dog", "ünï"]}, "size": {"type": "integer"},
        "name": {"type": "string", "maxLength": 5}}, "required": ["ok", "kind", "size", "name"]})";
    const auto grammar = json_schema_grammar(schema);
    auto shared = std::make_shared<GrammarTokens>(grammar, vocab, stops());
    const auto prototype = make_grammar_constraint(shared);
    std::mt19937 rng(5);
    int finished = 0;
    for (int walk = 0; walk < 20; ++walk) {
        auto c = prototype->restart();
        std::vector<int32_t> ids;
        bool stopped = false;
        for (int step = 0; step < 200 && !c->finished(); ++step) {
            const std::vector<uint64_t>& mask = c->allowed();
            std::vector<int32_t> candidates;
            for (int32_t id = 0; id < vocab->vocab_size(); ++id) {
                if (mask_has(mask, id)) candidates.push_back(id);
            }
            ASSERT_FALSE(candidates.empty());
            // favour ending: a stop token when allowed, half the time
            int32_t pick = candidates[rng() % candidates.size()];
            if (std::find(candidates.begin(), candidates.end(), stops()[0]) != candidates.end() && rng() % 2 == 0) {
                pick = stops()[0];
            }
            c->accept(pick);
            if (pick == stops()[0]) {
                stopped = true;
                break;
            }
            ids.push_back(pick);
        }
        if (!stopped && !c->finished()) continue;  // ran out of steps inside a string
        ++finished;
        GrammarState check(grammar);
        const std::string text = t.decode(ids, true);
        EXPECT_TRUE(check.advance(text) && check.complete()) << text;
    }
    EXPECT_GT(finished, 5);
}

TEST_P(Vocabularies, RefusesTokensOutsideTheMask) {
    const auto vocab = bytes();
    auto shared = std::make_shared<GrammarTokens>(choice_grammar(std::vector<std::string>{"yes", "no"}), vocab, stops());
    auto c = make_grammar_constraint(shared);
    auto id_of = [&](std::string_view text) {
        for (const auto& e : vocab->sorted()) {
            if (vocab->text(e) == text) return e.token;
        }
        ADD_FAILURE() << "no token reads '" << text << "'";
        return int32_t{0};
    };
    EXPECT_FALSE(mask_has(c->allowed(), id_of("0")));
    EXPECT_THROW(c->accept(id_of("0")), Error);
    EXPECT_THROW(c->accept(stops()[0]), Error);  // the text is not complete yet
    EXPECT_TRUE(mask_has(c->allowed(), id_of("n")));
    c->accept(id_of("n"));
    EXPECT_FALSE(c->finished());
    c->accept(id_of("o"));
    EXPECT_TRUE(c->finished());
}

// After "</think>": free thoughts first, then exactly the grammar's mask (as inside a text), and
// a token that would complete "</think>" and carry on is never allowed.
TEST_P(Vocabularies, GrammarAfterThoughts) {
    const std::vector<std::string> choices = {"yes", "no"};
    auto tokens = std::make_shared<GrammarTokens>(choice_grammar(choices), bytes(), stops());
    const auto proto = make_grammar_after("</think>", tokens);
    auto c = proto->restart();
    const auto count = [](const std::vector<uint64_t>& mask) {
        size_t n = 0;
        for (const uint64_t w : mask) n += static_cast<size_t>(__builtin_popcountll(w));
        return n;
    };
    const size_t vocab = static_cast<size_t>(tok().vocab_size());
    for (const int32_t id : tok().encode("Let me think: 2+2 is 4, so yes</think>", false)) {
        const auto& mask = c->allowed();
        EXPECT_GT(count(mask), vocab * 9 / 10);  // the thoughts are free
        ASSERT_TRUE(mask_has(mask, id)) << id;
        EXPECT_FALSE(c->finished());
        c->accept(id);
    }
    EXPECT_EQ(c->allowed(), make_grammar_constraint(tokens, false)->allowed());
    while (!c->finished()) {
        const auto& mask = c->allowed();
        int32_t next = -1;
        for (int32_t t = 0; t < static_cast<int32_t>(vocab) && next < 0; ++t) {
            if (mask_has(mask, t) && !tokens->is_stop(t)) next = t;
        }
        ASSERT_GE(next, 0);
        c->accept(next);
    }

    // "</think" held: a token that completes it may come only if it ends there (">" may, ">\n" not)
    auto held = proto->restart();
    for (const int32_t id : tok().encode("so</think", false)) held->accept(id);
    const auto& mask = held->allowed();
    int banned = 0;
    int32_t one_banned = -1;
    for (const auto& e : tokens->vocab().sorted()) {
        std::string text = "</think";
        text += tokens->vocab().text(e);
        const size_t at = text.find("</think>");
        const bool carries_on = at != std::string::npos && at + 8 < text.size();
        EXPECT_EQ(mask_has(mask, e.token), !carries_on) << text;
        if (carries_on) {
            EXPECT_TRUE(mask_has(proto->restart()->allowed(), e.token)) << text;  // (free elsewhere)
            ++banned;
            one_banned = e.token;
        }
    }
    if (banned == 0) return;  // (a small fixture vocabulary has no such token)
    EXPECT_THROW(held->accept(one_banned), ConstraintError);
}

// On "<tool_call>": free text, the grammar's text after each trigger, free again once it is
// complete; with `after`, a trigger before that text is only text.
TEST_P(Vocabularies, GrammarOnEachTrigger) {
    const std::vector<std::string> calls = {"{\"a\": 1}</tool_call>", "{\"b\": 2}</tool_call>"};
    auto tokens = std::make_shared<GrammarTokens>(choice_grammar(calls), bytes(), stops());
    const size_t vocab = static_cast<size_t>(tok().vocab_size());
    const auto count = [](const std::vector<uint64_t>& mask) {
        size_t n = 0;
        for (const uint64_t w : mask) n += static_cast<size_t>(__builtin_popcountll(w));
        return n;
    };
    auto say = [&](TokenConstraint& c, const std::string& text) {
        for (const int32_t id : tok().encode(text, false)) {
            ASSERT_TRUE(mask_has(c.allowed(), id)) << id << " in " << text;
            c.accept(id);
        }
    };
    // the grammar's own text, token by token (the first allowed token that is not a stop)
    auto complete = [&](TokenConstraint& c) {
        EXPECT_EQ(c.allowed(), make_grammar_constraint(tokens, false)->allowed());
        for (int steps = 0; steps < 64; ++steps) {
            const auto& mask = c.allowed();
            if (count(mask) > vocab * 9 / 10) return;  // free again
            int32_t next = -1;
            for (int32_t t = 0; t < static_cast<int32_t>(vocab) && next < 0; ++t) {
                if (mask_has(mask, t) && !tokens->is_stop(t)) next = t;
            }
            ASSERT_GE(next, 0);
            c.accept(next);
            EXPECT_FALSE(c.finished());
        }
        ADD_FAILURE() << "the grammar's text never ended";
    };
    auto c = make_grammar_on("<tool_call>", tokens)->restart();
    EXPECT_GT(count(c->allowed()), vocab * 9 / 10);
    say(*c, "Sure. <tool_call>");
    complete(*c);
    say(*c, " And again: <tool_call>");
    complete(*c);
    EXPECT_FALSE(c->finished());
    // armed by "</think>": a call's tag within the thoughts is thought
    auto t = make_grammar_on("<tool_call>", tokens, "</think>")->restart();
    say(*t, "I could write <tool_call> here.</think>");
    EXPECT_GT(count(t->allowed()), vocab * 9 / 10);
    say(*t, "Calling: <tool_call>");
    complete(*t);
    // the token that arms it may hold the trigger and carry on past it: that is text (the token
    // was free to come), not a failure
    for (const auto& e : tokens->vocab().sorted()) {
        const std::string_view text = tokens->vocab().text(e);
        if (text.size() < 3 || text[0] == text[1]) continue;
        auto armed_here = make_grammar_on(std::string(1, text[1]), tokens, std::string(1, text[0]))->restart();
        ASSERT_TRUE(mask_has(armed_here->allowed(), e.token));
        EXPECT_NO_THROW(armed_here->accept(e.token)) << text;
        EXPECT_GT(count(armed_here->allowed()), vocab / 2) << text;  // (still free text)
        break;
    }
}

INSTANTIATE_TEST_SUITE_P(Families, Vocabularies, ::testing::Values("smollm2", "llama2", "llama3", "mistral", "qwen2"));

}  // namespace
}  // namespace tps::structured
