// Behaviour beyond the reference tables: special tokens and BOS/EOS from the config files,
// invalid UTF-8 (random bytes never crash and decode to valid UTF-8), lossless round trips of
// byte-level tokenizers on random Unicode text, streaming around byte-fallback runs and the
// SentencePiece leading space, and the speed of encoding 100 KB.
#include "tokenizer_test_data.h"

#include "tpserve/common/error.h"
#include "tpserve/partition/gguf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <random>

namespace tps {
namespace {

Tokenizer family(const std::string& name) { return Tokenizer::from_hf_dir(test::fixture("models/" + name)); }

bool valid_utf8(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const auto b = static_cast<unsigned char>(s[i]);
        size_t n = b < 0x80 ? 1 : b >= 0xC2 && b < 0xE0 ? 2 : b >= 0xE0 && b < 0xF0 ? 3 : b >= 0xF0 && b < 0xF5 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (size_t k = 1; k < n; ++k) {
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
        }
        i += n;
    }
    return true;
}

TEST(TokenizerSpecial, BosEosAndSpecialFlagsFromTheFiles) {
    const Tokenizer l3 = family("llama3");
    EXPECT_EQ(l3.bos_id(), l3.token_id("<|begin_of_text|>"));
    EXPECT_EQ(l3.eos_id(), l3.token_id("<|eot_id|>"));
    ASSERT_TRUE(l3.bos_id().has_value());
    EXPECT_TRUE(l3.is_special(*l3.bos_id()));
    EXPECT_EQ(l3.token_text(*l3.bos_id()), "<|begin_of_text|>");
    EXPECT_EQ(l3.vocab_size(), 745);

    const Tokenizer q = family("qwen2");
    EXPECT_FALSE(q.bos_id().has_value());  // bos_token: null
    EXPECT_EQ(q.eos_id(), q.token_id("<|im_end|>"));

    const Tokenizer l2 = family("llama2");
    EXPECT_EQ(l2.bos_id(), 1);
    EXPECT_EQ(l2.eos_id(), 2);
    EXPECT_EQ(l2.token_id("<0x0A>"), l2.token_id("<0x0A>"));
    EXPECT_FALSE(l2.is_special(*l2.token_id("<0x0A>")));
    EXPECT_THROW(l2.token_text(l2.vocab_size() + 5), InputError);
}

TEST(TokenizerSpecial, SpecialTokensInTextAreSingleTokens) {
    const Tokenizer q = family("qwen2");
    const auto start = *q.token_id("<|im_start|>"), end = *q.token_id("<|im_end|>");
    const auto ids = q.encode("<|im_start|>user\nhi<|im_end|>", true);
    ASSERT_GE(ids.size(), 3u);
    EXPECT_EQ(ids.front(), start);
    EXPECT_EQ(ids.back(), end);
    EXPECT_EQ(q.decode(ids, true), "user\nhi");
    EXPECT_EQ(q.decode(ids, false), "<|im_start|>user\nhi<|im_end|>");

    const Tokenizer l3 = family("llama3");
    const auto with = l3.encode("x", true), without = l3.encode("x", false);
    ASSERT_EQ(with.size(), without.size() + 1);
    EXPECT_EQ(with[0], *l3.bos_id());
    EXPECT_EQ(l3.encode("", true), std::vector<int32_t>{*l3.bos_id()});
    EXPECT_TRUE(l3.encode("", false).empty());
}

TEST(TokenizerInput, InvalidUtf8IsRepairedNotFatal) {
    const Tokenizer l2 = family("llama2");
    const Tokenizer l3 = family("llama3");
    // one U+FFFD per maximal ill-formed subsequence, as Python's errors="replace"
    EXPECT_EQ(l3.encode("a\xE4\xBD" "b", false), l3.encode("a\xEF\xBF\xBD" "b", false));
    EXPECT_EQ(l3.encode("\xF0\x9F\x98", false), l3.encode("\xEF\xBF\xBD", false));
    EXPECT_EQ(l3.encode("\xC0\xAF", false), l3.encode("\xEF\xBF\xBD\xEF\xBF\xBD", false));
    std::mt19937 rng(20240501);
    for (int round = 0; round < 300; ++round) {
        std::string s(static_cast<size_t>(rng() % 64), '\0');
        for (char& c : s) c = static_cast<char>(rng() % 256);
        for (const Tokenizer* t : {&l2, &l3}) {
            const auto ids = t->encode(s, true);
            EXPECT_TRUE(valid_utf8(t->decode(ids, false)));
            EXPECT_TRUE(valid_utf8(t->decode(ids, true)));
        }
    }
}

int32_t byte_token(const Tokenizer& t, int b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    return *t.token_id(name);
}

TEST(TokenizerDecode, InvalidByteRunsAndUnknownIds) {
    const Tokenizer l2 = family("llama2");
    // a run of byte tokens that is not UTF-8 becomes one U+FFFD per byte (tokenizers' ByteFallback)
    const std::vector<int32_t> ids = {byte_token(l2, 0xE4), byte_token(l2, 0xBD), byte_token(l2, 0xA0),
                                      byte_token(l2, 0xE5)};
    EXPECT_EQ(l2.decode(ids), "\uFFFD\uFFFD\uFFFD\uFFFD");
    EXPECT_EQ(l2.decode(std::vector<int32_t>(ids.begin(), ids.begin() + 3)), "你");
    // ids outside the vocabulary are dropped, as tokenizers does
    EXPECT_EQ(l2.decode(std::vector<int32_t>{-1, 100000, ids[0], ids[1], ids[2]}), "你");
    const Tokenizer l3 = family("llama3");
    EXPECT_EQ(l3.decode(l3.encode("caf\xC3\xA9", false)), "caf\xC3\xA9");
}

// Random text from pieces that stress the byte-level path: ASCII, accents, CJK, emoji, spaces.
std::string random_text(std::mt19937& rng, size_t pieces) {
    static const std::vector<std::string> parts = {
        "a",  "Z",  "the", " ",  "  ",  "\n", "\t", "\r\n", "'s", "'LL", "123", "4567", "é",   "ß",   "Ω", "ж",
        "中", "文", "日本", "한", "😀", "👨‍👩‍👧", "🇯🇵", "…",   "—",   "\u00a0", "\u3000", "!",  "?!",  "<", "|>", "x\u0301"};
    std::string s;
    for (size_t i = 0; i < pieces; ++i) s += parts[rng() % parts.size()];
    return s;
}

TEST(TokenizerRoundTrip, ByteLevelTokenizersAreLossless) {
    std::mt19937 rng(7);
    const Tokenizer real = Tokenizer::from_hf_dir(test::fixture("smollm2"));
    for (const char* name : {"llama3", "smollm2"}) {
        const Tokenizer t = family(name);
        for (int i = 0; i < 200; ++i) {
            const std::string s = random_text(rng, 1 + rng() % 40);
            EXPECT_EQ(t.decode(t.encode(s, false)), s) << name;
            EXPECT_EQ(t.decode(t.encode(s, true), true), s) << name;
            EXPECT_EQ(real.decode(real.encode(s, false)), s) << "smollm2 (real)";
        }
    }
}

TEST(TokenizerRoundTrip, SentencePieceTokenizersKeepText) {
    std::mt19937 rng(11);
    for (const char* name : {"llama2", "mistral"}) {
        const Tokenizer t = family(name);
        for (int i = 0; i < 200; ++i) {
            // byte fallback covers every character; the decoder strips the one leading space added
            std::string s = "w";
            s += random_text(rng, 1 + rng() % 30);
            EXPECT_EQ(t.decode(t.encode(s, true), true), s) << name;
        }
    }
}

std::vector<std::string> stream_pieces(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip = true) {
    StreamDecoder sd(t, skip);
    std::vector<std::string> out;
    for (const int32_t id : ids) out.push_back(sd.push(id));
    out.push_back(sd.finish());
    return out;
}

TEST(StreamDecoder, HoldsByteFallbackRunsUntilTheyEnd) {
    const Tokenizer l2 = family("llama2");
    const int32_t hello = *l2.token_id("\xE2\x96\x81") /* "▁" */;
    const std::vector<int32_t> ids = {*l2.bos_id(), hello,
                                      byte_token(l2, 0xE4), byte_token(l2, 0xBD), byte_token(l2, 0xA0),
                                      byte_token(l2, 0xE5), byte_token(l2, 0xA5), byte_token(l2, 0xBD), hello};
    const auto pieces = stream_pieces(l2, ids);
    // nothing is emitted while a byte run is open: the whole run decides its text
    for (size_t i = 2; i < 8; ++i) EXPECT_EQ(pieces[i], "") << i;
    std::string all;
    for (const auto& p : pieces) all += p;
    EXPECT_EQ(all, l2.decode(ids, true));
    EXPECT_EQ(all, "你好 ");  // the first "▁" is the leading space the decoder strips
}

TEST(StreamDecoder, LeadingSpaceAndSpecialTokens) {
    const Tokenizer l2 = family("llama2");
    const auto ids = l2.encode("Hello world</s> again", true);
    for (const bool skip : {true, false}) {
        const auto pieces = stream_pieces(l2, ids, skip);
        std::string all;
        for (const auto& p : pieces) all += p;
        EXPECT_EQ(all, l2.decode(ids, skip));
        EXPECT_EQ(pieces[0], skip ? "" : "<s>");
        if (skip) {
            const auto first = std::find_if(pieces.begin(), pieces.end(), [](const auto& p) { return !p.empty(); });
            ASSERT_NE(first, pieces.end());
            EXPECT_EQ(first->front(), 'H') << "the SentencePiece leading space is never streamed";
        }
    }
}

TEST(StreamDecoder, TextThatFollowsShownTokensKeepsItsLeadingSpace) {
    const Tokenizer l2 = family("llama2");
    const auto prompt = l2.encode("Hello world", true);
    const auto more = l2.encode("world again", false);  // "▁world ▁again": the space the decoder strips alone
    StreamDecoder fresh(l2);
    StreamDecoder after(l2);
    after.follow(prompt);
    std::string alone, following;
    for (const int32_t id : more) {
        alone += fresh.push(id);
        following += after.push(id);
    }
    alone += fresh.finish();
    following += after.finish();
    EXPECT_EQ(alone, "world again");
    EXPECT_EQ(following, " world again");
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), more.begin(), more.end());
    EXPECT_EQ(l2.decode(prompt, true) + following, l2.decode(all, true));
}

TEST(StreamDecoder, ByteLevelNeverEmitsHalfACharacter) {
    const Tokenizer l3 = family("llama3");
    const auto ids = l3.encode("鱼☃😀 ok", false);  // characters the tiny vocabulary splits into bytes
    const auto pieces = stream_pieces(l3, ids);
    std::string all;
    for (const auto& p : pieces) {
        EXPECT_TRUE(valid_utf8(p)) << p;
        all += p;
    }
    EXPECT_EQ(all, "鱼☃😀 ok");
    EXPECT_GT(ids.size(), 7u) << "the test needs multi-token characters";
}

TEST(TokenizerSpeed, PathologicalInputs) {
#if defined(__SANITIZE_ADDRESS__) || !defined(NDEBUG)
    const double limit_s = 30.0;
#else
    const double limit_s = 1.0;
#endif
    const size_t n = 100 * 1024;
    std::string cjk;
    while (cjk.size() < n) cjk += "自然语言处理鱼";
    const std::vector<std::pair<std::string, std::string>> inputs = {
        {"100 KB of spaces then x", std::string(n, ' ') + "x"},
        {"100 KB of 'a'", std::string(n, 'a')},
        {"100 KB of newlines and tabs", [&] {
             std::string s;
             while (s.size() < n) s += " \n\t \r\n";
             return s;
         }()},
        {"100 KB of CJK without spaces", cjk},
    };
    for (const char* name : {"llama3", "llama2", "qwen2", "smollm2"}) {
        const Tokenizer t = family(name);
        for (const auto& [what, text] : inputs) {
            const auto t0 = std::chrono::steady_clock::now();
            const auto ids = t.encode(text, false);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            EXPECT_LT(s, limit_s) << name << ": " << what;
            EXPECT_EQ(t.decode(ids, true).size() >= text.size() - 1, true) << name << ": " << what;
            std::printf("[ speed ] %-8s %-30s -> %7zu ids in %6.1f ms\n", name, what.c_str(), ids.size(), s * 1e3);
        }
    }
}

std::string hundred_kb() {
    std::string s;
    while (s.size() < 100 * 1024) {
        for (const auto& t : test::texts()) s += t.input + "\n";
    }
    return s;
}

TEST(TokenizerSpeed, Encode100KB) {
    const std::string text = hundred_kb();
#if defined(__SANITIZE_ADDRESS__) || !defined(NDEBUG)
    const double limit_s = 20.0;  // sanitizer and debug builds: only that it finishes
#else
    const double limit_s = 1.0;
#endif
    for (const auto& [name, tok] : {std::pair{"llama3", family("llama3")},
                                    std::pair{"llama2", family("llama2")},
                                    std::pair{"qwen2", family("qwen2")},
                                    std::pair{"smollm2 (real, 49k vocab)", Tokenizer::from_hf_dir(test::fixture("smollm2"))}}) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto ids = tok.encode(text, true);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("[ speed ] %-26s %zu bytes -> %zu ids in %.1f ms\n", name, text.size(), ids.size(), s * 1e3);
        EXPECT_LT(s, limit_s) << name;
    }
}

}  // namespace
}  // namespace tps
