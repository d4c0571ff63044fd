// GGUF tokenizer metadata -> Tokenizer, built from the same stages as tokenizer.json so that a
// GGUF made from a family's tokenizer.json encodes and decodes like it:
//   gpt2:  added tokens (control/user-defined) -> llama.cpp's regexes for tokenizer.ggml.pre as
//          isolating splits -> byte-level -> BPE on tokenizer.ggml.merges; ByteLevel decoder.
//   llama: added tokens -> "▁" for spaces (and a leading "▁", add_space_prefix) -> llama.cpp's
//          SentencePiece merge by score with byte fallback; Replace + ByteFallback + Fuse + Strip.
// One deliberate difference from llama.cpp: the qwen2 pre-tokenizer also NFC-normalizes, as
// Qwen2's tokenizer.json does (llama.cpp skips it; they differ only on non-NFC input).
#include "tokenizer_impl.h"

#include "decoders.h"
#include "models.h"
#include "normalizers.h"
#include "post_processors.h"
#include "pre_tokenizers.h"
#include "tpserve/common/check.h"
#include "utf8.h"

#include <array>

namespace tps {
namespace {

namespace tk = tok;

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class TokenType : int64_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr std::string_view kLlama3Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// What llama.cpp (llama-vocab.cpp) does for a tokenizer.ggml.pre name.
struct PreRecipe {
    std::vector<std::string_view> regexes;  // applied in turn, each as an isolating split
    bool ignore_merges = false;
    bool add_bos = false;  // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
    bool nfc = false;
};

PreRecipe pre_recipe(const std::string& pre, const std::string& origin) {
    const auto is = [&](std::initializer_list<std::string_view> names) {
        for (const auto n : names) {
            if (pre == n) return true;
        }
        return false;
    };
    if (is({"llama3", "llama-v3", "llama-bpe", "falcon3"})) return {{kLlama3Regex}, true, true, false};
    if (is({"dbrx", "smaug-bpe"})) return {{kLlama3Regex}, false, false, false};
    if (is({"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"})) return {{kQwen2Regex}, false, false, pre != "stablelm2"};
    if (is({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"})) {
        return {{R"(\p{N})", kGpt2Regex}, false, false, false};
    }
    if (is({"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de"})) return {{kGpt2Regex}, false, false, false};
    if (pre == "default") {
        return {{R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Regex, R"(\p{N}+)", "[0-9][0-9][0-9]"}, false, false, false};
    }
    throw InputError(fmt::format(
        "{}: tokenizer.ggml.pre '{}' is not supported (supported: llama-bpe/llama3, qwen2, smollm, gpt2/gpt-2, "
        "default, and their llama.cpp aliases)",
        origin, pre));
}

struct Meta {
    const GgufFile& f;
    const std::string& origin;

    const GgufValue* array(const std::string& key, GgufType element, bool required) const {
        const GgufValue* v = f.find(key);
        if (!v) {
            TPS_CHECK_AS(InputError, !required, "{}: missing tokenizer metadata '{}'", origin, key);
            return nullptr;
        }
        const bool ok = v->type == GgufType::array &&
                        (element == GgufType::string ? v->array_type == GgufType::string
                         : element == GgufType::f32  ? v->reals.size() == v->array_size
                                                     : v->ints.size() == v->array_size);
        TPS_CHECK_AS(InputError, ok, "{}: metadata '{}' must be an array of {}", origin, key,
                     element == GgufType::string ? "strings" : element == GgufType::f32 ? "floats" : "integers");
        return v;
    }
    std::optional<int32_t> token(const std::string& key, size_t n_tokens) const {
        const auto v = f.integer(key);
        if (!v) return std::nullopt;
        TPS_CHECK_AS(InputError, *v >= 0 && static_cast<uint64_t>(*v) < n_tokens,
                     "{}: {} = {} is outside the vocabulary of {} tokens", origin, key, *v, n_tokens);
        return static_cast<int32_t>(*v);
    }
    bool flag(const std::string& key, bool fallback) const {
        const auto v = f.integer(key);
        return v ? *v != 0 : fallback;
    }
};

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& file) {
    auto impl = std::make_unique<Impl>();
    impl->origin = file.path;
    const std::string& origin = impl->origin;
    const Meta m{file, origin};

    const auto kind = file.string("tokenizer.ggml.model");
    TPS_CHECK_AS(InputError, kind.has_value(), "{}: no tokenizer metadata (tokenizer.ggml.model is missing)", origin);
    TPS_CHECK_AS(InputError, *kind == "gpt2" || *kind == "llama",
                 "{}: tokenizer.ggml.model '{}' is not supported (supported: gpt2, llama)", origin, *kind);
    const std::vector<std::string>& tokens = m.array("tokenizer.ggml.tokens", GgufType::string, true)->strs;
    TPS_CHECK_AS(InputError, !tokens.empty() && tokens.size() <= static_cast<size_t>(INT32_MAX),
                 "{}: tokenizer.ggml.tokens has {} entries", origin, tokens.size());
    std::vector<int64_t> types(tokens.size(), static_cast<int64_t>(TokenType::normal));
    if (const GgufValue* t = m.array("tokenizer.ggml.token_type", GgufType::i32, false)) {
        TPS_CHECK_AS(InputError, t->ints.size() == tokens.size(), "{}: {} token types for {} tokens", origin,
                     t->ints.size(), tokens.size());
        types = t->ints;
    }

    tk::Vocab vocab;
    for (size_t i = 0; i < tokens.size(); ++i) {
        TPS_CHECK_AS(InputError, tk::utf8_is_valid(tokens[i]), "{}: token {} is not valid UTF-8", origin, i);
        // llama.cpp names an empty token "[EMPTY_<id>]"
        vocab.add(tokens[i].empty() ? fmt::format("[EMPTY_{}]", i) : tokens[i], static_cast<int32_t>(i),
                  origin + ": tokenizer.ggml.tokens");
        const auto type = static_cast<TokenType>(types[i]);
        if (type == TokenType::control || type == TokenType::unknown || type == TokenType::user_defined) {
            tk::AddedToken a;
            a.content = tokens[i];
            a.id = static_cast<int32_t>(i);
            a.special = type != TokenType::user_defined;
            a.normalized = false;
            if (!a.content.empty()) impl->added.add(std::move(a), origin);
        }
    }

    const auto bos = m.token("tokenizer.ggml.bos_token_id", tokens.size());
    const auto eos = m.token("tokenizer.ggml.eos_token_id", tokens.size());
    bool add_bos_default = false;
    if (*kind == "gpt2") {
        const std::string pre = file.string("tokenizer.ggml.pre").value_or("default");
        const PreRecipe recipe = pre_recipe(pre, origin);
        add_bos_default = recipe.add_bos;
        std::vector<std::pair<std::string, std::string>> merges;
        for (const std::string& s : m.array("tokenizer.ggml.merges", GgufType::string, true)->strs) {
            const size_t space = s.find(' ', 1);
            TPS_CHECK_AS(InputError, space != std::string::npos, "{}: merge '{}' is not two tokens", origin, s);
            merges.emplace_back(s.substr(0, space), s.substr(space + 1));
        }
        tk::BpeOptions opt;
        opt.ignore_merges = recipe.ignore_merges;
        impl->model = tk::make_bpe_model(std::move(vocab), merges, std::move(opt), origin + ": tokenizer.ggml.merges");
        if (recipe.nfc) impl->normalizer = tk::make_nfc_normalizer();
        std::vector<std::unique_ptr<tk::PreTokenizer>> pre_parts;
        for (const auto re : recipe.regexes) {
            pre_parts.push_back(tk::make_split_pre_tokenizer(tk::Regex::pattern(re, origin + ": pre-tokenizer " + pre),
                                                             tk::SplitBehavior::isolated, false));
        }
        pre_parts.push_back(tk::make_byte_level_pre_tokenizer(false, false));
        impl->pre_tokenizer = tk::make_sequence_pre_tokenizer(std::move(pre_parts));
        impl->decoder = tk::make_byte_level_decoder();
    } else {
        const GgufValue* s = m.array("tokenizer.ggml.scores", GgufType::f32, true);
        TPS_CHECK_AS(InputError, s->reals.size() == tokens.size(), "{}: {} scores for {} tokens", origin,
                     s->reals.size(), tokens.size());
        std::vector<float> scores(s->reals.begin(), s->reals.end());
        const auto unk = m.token("tokenizer.ggml.unknown_token_id", tokens.size());
        impl->model = tk::make_spm_model(std::move(vocab), std::move(scores), unk, origin);
        add_bos_default = true;
        const bool space_prefix = m.flag("tokenizer.ggml.add_space_prefix", true);
        const std::string meta_space = "\xE2\x96\x81";  // "▁"
        std::vector<std::unique_ptr<tk::Normalizer>> norm;
        if (space_prefix) norm.push_back(tk::make_prepend_normalizer(meta_space));
        norm.push_back(tk::make_replace_normalizer(tk::Regex::literal(" ", origin), meta_space));
        impl->normalizer = tk::make_sequence_normalizer(std::move(norm));
        std::vector<std::unique_ptr<tk::Decoder>> dec;
        dec.push_back(tk::make_replace_decoder(tk::Regex::literal(meta_space, origin), " "));
        dec.push_back(tk::make_byte_fallback_decoder());
        dec.push_back(tk::make_fuse_decoder());
        if (space_prefix) dec.push_back(tk::make_strip_decoder(U' ', 1, 0));
        impl->decoder = tk::make_sequence_decoder(std::move(dec));
    }

    // llama.cpp's default for the family applies only where the file names a BOS token
    const bool add_bos = m.flag("tokenizer.ggml.add_bos_token", add_bos_default && bos.has_value());
    const bool add_eos = m.flag("tokenizer.ggml.add_eos_token", false);
    TPS_CHECK_AS(InputError, !add_bos || bos.has_value(), "{}: add_bos_token is set but bos_token_id is missing", origin);
    TPS_CHECK_AS(InputError, !add_eos || eos.has_value(), "{}: add_eos_token is set but eos_token_id is missing", origin);
    std::vector<tk::TemplateItem> single;
    if (add_bos) single.push_back({false, {*bos}});
    single.push_back({true, {}});
    if (add_eos) single.push_back({false, {*eos}});
    impl->post_processor = tk::make_template_post_processor(std::move(single));
    impl->bos = bos;
    impl->eos = eos;
    impl->added.build(impl->normalizer.get());
    return Tokenizer(std::move(impl));
}

}  // namespace tps
