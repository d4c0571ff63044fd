// Every tokenizer against Hugging Face tokenizers (references.json): ids with and without special
// tokens, decode() with and without skipping specials, random id sequences, and StreamDecoder
// pieces joined equal to decode(). GGUF tokenizers are checked against their family's
// tokenizer.json (or llama.cpp's algorithm where the reference records that it differs).
#include "tokenizer_test_data.h"

#include "tpserve/partition/gguf.h"

#include <gtest/gtest.h>

#include <map>

namespace tps {
namespace {

using nlohmann::json;
using test::ids_of;
using test::references;
using test::texts;

std::vector<std::string> tokenizer_names() {
    std::vector<std::string> names;
    for (const auto& [name, _] : references()["tokenizers"].items()) names.push_back(name);
    return names;
}

const Tokenizer& load(const std::string& name) {
    static std::map<std::string, Tokenizer> cache;
    if (const auto it = cache.find(name); it != cache.end()) return it->second;
    const json& e = references()["tokenizers"][name];
    const auto path = test::source_dir() / e["path"].get<std::string>();
    if (e["kind"] == "gguf") return cache.emplace(name, Tokenizer::from_gguf(read_gguf_metadata(path))).first->second;
    const auto config = e["config"].is_null() ? std::filesystem::path() : test::source_dir() / e["config"].get<std::string>();
    return cache.emplace(name, Tokenizer::from_hf_json(path, config)).first->second;
}

// The reference entry holding the expected cases: a GGUF's family entry.
const json& expected_entry(const std::string& name) {
    const json& e = references()["tokenizers"][name];
    return e["kind"] == "gguf" ? references()["tokenizers"][e["same_as"].get<std::string>()] : e;
}

std::string stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip, std::string* bad_piece) {
    StreamDecoder sd(tok, skip);
    std::string all;
    const auto take = [&](const std::string& piece) {
        // a piece is never half a character: each one is valid UTF-8 on its own
        for (size_t i = 0; i < piece.size();) {
            const auto b = static_cast<unsigned char>(piece[i]);
            const size_t n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
            bool ok = b < 0x80 || (b >= 0xC2 && b <= 0xF4 && i + n <= piece.size());
            for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(piece[i + k]) & 0xC0) == 0x80;
            if (!ok && bad_piece->empty()) *bad_piece = piece;
            i += ok ? n : 1;
        }
        all += piece;
    };
    for (const int32_t id : ids) take(sd.push(id));
    take(sd.finish());
    return all;
}

class TokenizerReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerReference, EncodeEqualsTokenizers) {
    const json& entry = references()["tokenizers"][GetParam()];
    if (entry.contains("source_bytes")) {
        ASSERT_EQ(std::filesystem::file_size(test::source_dir() / entry["path"].get<std::string>()),
                  entry["source_bytes"].get<uintmax_t>())
            << entry["path"] << " changed since references.json was made: rerun "
            << "tests/fixtures/make_tokenizer_references.py (see tests/fixtures/tokenizers/README.md)";
    }
    const Tokenizer& tok = load(GetParam());
    const json& cases = expected_entry(GetParam())["cases"];
    const json no_overrides = json::object();
    const json& overrides = entry.contains("gguf_ids") ? entry["gguf_ids"] : no_overrides;
    ASSERT_EQ(cases.size(), texts().size()) << "references.json is older than texts.json: rerun the script";
    int pass = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
        const auto& t = texts()[i];
        const json& c = overrides.contains(t.name) ? overrides[t.name] : cases[i];
        ASSERT_EQ(cases[i]["name"], t.name);
        const auto plain = tok.encode(t.input, false);
        const auto special = tok.encode(t.input, true);
        EXPECT_EQ(plain, ids_of(c["ids"])) << GetParam() << " / " << t.name << " (add_special=false)";
        EXPECT_EQ(special, ids_of(c["ids_special"])) << GetParam() << " / " << t.name << " (add_special=true)";
        pass += plain == ids_of(c["ids"]) && special == ids_of(c["ids_special"]);
    }
    std::printf("[ %-26s ] encode: %d/%zu texts equal tokenizers' ids (both flags)%s\n", GetParam().c_str(), pass,
                cases.size(),
                overrides.empty() ? ""
                                  : (", " + std::to_string(overrides.size()) +
                                     " of them as llama.cpp's SentencePiece gives them")
                                        .c_str());
}

TEST_P(TokenizerReference, DecodeEqualsTokenizers) {
    const Tokenizer& tok = load(GetParam());
    const json& entry = expected_entry(GetParam());
    int pass = 0, total = 0;
    const auto check = [&](const json& c, const std::string& what) {
        const auto ids = ids_of(c.contains("ids_special") ? c["ids_special"] : c["ids"]);
        const std::string full = tok.decode(ids, false), skip = tok.decode(ids, true);
        EXPECT_EQ(full, c["decoded"].get<std::string>()) << GetParam() << " / " << what << " (skip_special=false)";
        EXPECT_EQ(skip, c["decoded_skip"].get<std::string>()) << GetParam() << " / " << what << " (skip_special=true)";
        pass += full == c["decoded"].get<std::string>() && skip == c["decoded_skip"].get<std::string>();
        ++total;
    };
    for (const json& c : entry["cases"]) check(c, c["name"].get<std::string>());
    for (size_t i = 0; i < entry["decode_cases"].size(); ++i) check(entry["decode_cases"][i], "random ids " + std::to_string(i));
    std::printf("[ %-26s ] decode: %d/%d id sequences equal tokenizers' text (both flags)\n", GetParam().c_str(), pass,
                total);
}

TEST_P(TokenizerReference, StreamJoinedEqualsDecode) {
    const Tokenizer& tok = load(GetParam());
    const json& entry = expected_entry(GetParam());
    std::vector<std::vector<int32_t>> seqs;
    for (const json& c : entry["cases"]) seqs.push_back(ids_of(c["ids_special"]));
    for (const json& c : entry["decode_cases"]) seqs.push_back(ids_of(c["ids"]));
    for (size_t i = 0; i < seqs.size(); ++i) {
        for (const bool skip : {false, true}) {
            std::string bad;
            EXPECT_EQ(stream(tok, seqs[i], skip, &bad), tok.decode(seqs[i], skip))
                << GetParam() << " sequence " << i << " skip_special=" << skip;
            EXPECT_EQ(bad, "") << GetParam() << " sequence " << i << ": a streamed piece is not whole UTF-8";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(All, TokenizerReference, ::testing::ValuesIn(tokenizer_names()),
                         [](const auto& param_info) {
                             std::string n = param_info.param;
                             for (char& c : n) {
                                 if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                             }
                             return n;
                         });

}  // namespace
}  // namespace tps
