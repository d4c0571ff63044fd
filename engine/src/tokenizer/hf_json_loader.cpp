// tokenizer.json (+ tokenizer_config.json) -> Tokenizer. Each component is read by type; a type
// or an option this engine does not implement is an InputError that names it and where it sits
// (e.g. "pre_tokenizer.pretokenizers[1]"), never a silent approximation. "truncation" and
// "padding" are ignored: they do not change the ids of a single encode() below the length limit.
#include "tokenizer_impl.h"

#include "decoders.h"
#include "models.h"
#include "normalizers.h"
#include "post_processors.h"
#include "pre_tokenizers.h"
#include "tpserve/common/check.h"
#include "utf8.h"

#include <nlohmann/json.hpp>

#include <fstream>

namespace tps {
namespace {

using nlohmann::json;
namespace tk = tok;

// A JSON object being read, with the path used in messages ("decoder.decoders[2]").
struct Node {
    const json& j;
    const std::string& origin;
    std::string where;

    Node child(const json& c, const std::string& key) const { return {c, origin, where + "." + key}; }
    Node item(const json& c, size_t i) const { return {c, origin, fmt::format("{}[{}]", where, i)}; }

    [[noreturn]] void fail(const std::string& what) const {
        throw InputError(fmt::format("{}: {}: {}", origin, where, what));
    }
    const json* find(const char* key) const {
        if (!j.is_object()) return nullptr;
        const auto it = j.find(key);
        return it == j.end() || it->is_null() ? nullptr : &*it;
    }
    const json& need(const char* key) const {
        const json* v = find(key);
        if (!v) fail(fmt::format("missing field \"{}\"", key));
        return *v;
    }
    std::string string(const char* key) const {
        const json& v = need(key);
        if (!v.is_string()) fail(fmt::format("field \"{}\" must be a string, got {}", key, v.dump()));
        return v.get<std::string>();
    }
    std::string string_or(const char* key, const std::string& fallback) const {
        return find(key) ? string(key) : fallback;
    }
    bool boolean_or(const char* key, bool fallback) const {
        const json* v = find(key);
        if (!v) return fallback;
        if (!v->is_boolean()) fail(fmt::format("field \"{}\" must be true or false, got {}", key, v->dump()));
        return v->get<bool>();
    }
    int64_t integer(const char* key) const {
        const json& v = need(key);
        if (!v.is_number_integer()) fail(fmt::format("field \"{}\" must be an integer, got {}", key, v.dump()));
        return v.get<int64_t>();
    }
    const json& array(const char* key) const {
        const json& v = need(key);
        if (!v.is_array()) fail(fmt::format("field \"{}\" must be an array", key));
        return v;
    }
    char32_t character(const char* key) const {
        const std::string s = string(key);
        const std::u32string cps = tk::utf8_to_u32(s);
        if (cps.size() != 1) fail(fmt::format("field \"{}\" must be one character, got '{}'", key, s));
        return cps[0];
    }
    std::string type() const {
        if (!j.is_object()) fail("must be an object");
        return string("type");
    }
    [[noreturn]] void unsupported(const std::string& kind, const std::string& type, const char* supported) const {
        throw InputError(fmt::format("{}: {} type '{}' is not supported (at {}; supported: {})", origin, kind, type,
                                     where, supported));
    }
};

// {"String": "..."} or {"Regex": "..."}.
tk::Regex pattern(const Node& n) {
    const Node p = n.child(n.need("pattern"), "pattern");
    if (const json* s = p.find("String")) {
        if (!s->is_string()) p.fail("\"String\" must be a string");
        return tk::Regex::literal(s->get<std::string>(), n.origin + ": " + p.where);
    }
    if (const json* r = p.find("Regex")) {
        if (!r->is_string()) p.fail("\"Regex\" must be a string");
        return tk::Regex::pattern(r->get<std::string>(), n.origin + ": " + p.where);
    }
    p.fail("must be {\"String\": ...} or {\"Regex\": ...}");
}

std::unique_ptr<tk::Normalizer> normalizer(const Node& n) {
    const std::string type = n.type();
    if (type == "Sequence") {
        std::vector<std::unique_ptr<tk::Normalizer>> parts;
        const json& list = n.array("normalizers");
        for (size_t i = 0; i < list.size(); ++i) parts.push_back(normalizer(n.child(list, "normalizers").item(list[i], i)));
        return tk::make_sequence_normalizer(std::move(parts));
    }
    if (type == "NFC") return tk::make_nfc_normalizer();
    if (type == "NFD") return tk::make_nfd_normalizer();
    if (type == "Prepend") return tk::make_prepend_normalizer(n.string("prepend"));
    if (type == "Replace") return tk::make_replace_normalizer(pattern(n), n.string("content"));
    if (type == "Strip") return tk::make_strip_normalizer(n.boolean_or("strip_left", true), n.boolean_or("strip_right", true));
    n.unsupported("normalizer", type, "Sequence, NFC, NFD, Prepend, Replace, Strip");
}

tk::PrependScheme prepend_scheme(const Node& n) {
    if (!n.find("prepend_scheme")) {  // files before tokenizers 0.15
        return n.boolean_or("add_prefix_space", true) ? tk::PrependScheme::always : tk::PrependScheme::never;
    }
    const std::string s = n.string("prepend_scheme");
    if (s == "always") return tk::PrependScheme::always;
    if (s == "first") return tk::PrependScheme::first;
    if (s == "never") return tk::PrependScheme::never;
    n.fail(fmt::format("prepend_scheme '{}' is not one of always, first, never", s));
}

std::unique_ptr<tk::PreTokenizer> pre_tokenizer(const Node& n) {
    const std::string type = n.type();
    if (type == "Sequence") {
        std::vector<std::unique_ptr<tk::PreTokenizer>> parts;
        const json& list = n.array("pretokenizers");
        for (size_t i = 0; i < list.size(); ++i) {
            parts.push_back(pre_tokenizer(n.child(list, "pretokenizers").item(list[i], i)));
        }
        return tk::make_sequence_pre_tokenizer(std::move(parts));
    }
    if (type == "Split") {
        const std::string b = n.string("behavior");
        tk::SplitBehavior behavior{};
        if (b == "Removed") {
            behavior = tk::SplitBehavior::removed;
        } else if (b == "Isolated") {
            behavior = tk::SplitBehavior::isolated;
        } else if (b == "MergedWithPrevious") {
            behavior = tk::SplitBehavior::merged_with_previous;
        } else if (b == "MergedWithNext") {
            behavior = tk::SplitBehavior::merged_with_next;
        } else if (b == "Contiguous") {
            behavior = tk::SplitBehavior::contiguous;
        } else {
            n.fail(fmt::format("behavior '{}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                               "Contiguous",
                               b));
        }
        return tk::make_split_pre_tokenizer(pattern(n), behavior, n.boolean_or("invert", false));
    }
    if (type == "ByteLevel") {
        return tk::make_byte_level_pre_tokenizer(n.boolean_or("add_prefix_space", true), n.boolean_or("use_regex", true));
    }
    if (type == "Metaspace") {
        std::string replacement;
        tk::utf8_append(replacement, n.character("replacement"));
        return tk::make_metaspace_pre_tokenizer(replacement, prepend_scheme(n), n.boolean_or("split", true));
    }
    if (type == "Digits") return tk::make_digits_pre_tokenizer(n.boolean_or("individual_digits", false));
    n.unsupported("pre_tokenizer", type, "Sequence, Split, ByteLevel, Metaspace, Digits");
}

std::vector<std::pair<std::string, std::string>> merges(const Node& n) {
    const json& list = n.array("merges");
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
        const json& m = list[i];
        if (m.is_string()) {  // "a b"
            const std::string s = m.get<std::string>();
            const size_t space = s.find(' ');
            if (space == std::string::npos) n.fail(fmt::format("merges[{}] '{}' is not two tokens", i, s));
            out.emplace_back(s.substr(0, space), s.substr(space + 1));
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
            out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
            n.fail(fmt::format("merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", i, m.dump()));
        }
    }
    return out;
}

std::unique_ptr<tk::Model> model(const Node& n) {
    const std::string type = n.find("type") ? n.string("type") : (n.find("merges") ? "BPE" : "");
    if (type != "BPE") n.unsupported("model", type.empty() ? "(none)" : type, "BPE");
    if (const json* d = n.find("dropout")) {
        if (!d->is_number() || d->get<double>() != 0.0) n.fail("dropout is not supported (it must be null)");
    }
    const json& v = n.need("vocab");
    if (!v.is_object()) n.fail("field \"vocab\" must be an object of token: id");
    tk::Vocab vocab;
    const std::string where = n.origin + ": " + n.where + ".vocab";
    for (const auto& [token, id] : v.items()) {
        if (!id.is_number_integer()) n.fail(fmt::format("vocab['{}'] must be an integer id, got {}", token, id.dump()));
        const int64_t i = id.get<int64_t>();
        if (i < 0 || i > INT32_MAX) n.fail(fmt::format("vocab['{}'] has the id {} out of range", token, i));
        vocab.add(token, static_cast<int32_t>(i), where);
    }
    tk::BpeOptions opt;
    if (n.find("unk_token")) opt.unk_token = n.string("unk_token");
    opt.continuing_subword_prefix = n.string_or("continuing_subword_prefix", "");
    opt.end_of_word_suffix = n.string_or("end_of_word_suffix", "");
    opt.fuse_unk = n.boolean_or("fuse_unk", false);
    opt.byte_fallback = n.boolean_or("byte_fallback", false);
    opt.ignore_merges = n.boolean_or("ignore_merges", false);
    return tk::make_bpe_model(std::move(vocab), merges(n), std::move(opt), n.origin + ": " + n.where);
}

std::unique_ptr<tk::PostProcessor> post_processor(const Node& n) {
    const std::string type = n.type();
    if (type == "Sequence") {
        std::vector<std::unique_ptr<tk::PostProcessor>> parts;
        const json& list = n.array("processors");
        for (size_t i = 0; i < list.size(); ++i) {
            parts.push_back(post_processor(n.child(list, "processors").item(list[i], i)));
        }
        return tk::make_sequence_post_processor(std::move(parts));
    }
    if (type == "ByteLevel") return tk::make_identity_post_processor();  // offsets only
    if (type == "TemplateProcessing") {
        const Node specials = n.child(n.need("special_tokens"), "special_tokens");
        const json& single = n.array("single");
        std::vector<tk::TemplateItem> items;
        for (size_t i = 0; i < single.size(); ++i) {
            const Node it = n.child(single, "single").item(single[i], i);
            if (const json* seq = it.find("Sequence")) {
                const std::string id = it.child(*seq, "Sequence").string("id");
                if (id != "A") it.fail(fmt::format("a single-sequence template cannot use sequence '{}'", id));
                items.push_back({true, {}});
            } else if (const json* sp = it.find("SpecialToken")) {
                const std::string name = it.child(*sp, "SpecialToken").string("id");
                const json* entry = specials.find(name.c_str());
                if (!entry) it.fail(fmt::format("special token '{}' is not in special_tokens", name));
                const Node e = specials.child(*entry, name);
                std::vector<int32_t> ids;
                for (const json& x : e.array("ids")) {
                    if (!x.is_number_integer()) e.fail("ids must be integers");
                    ids.push_back(x.get<int32_t>());
                }
                items.push_back({false, std::move(ids)});
            } else {
                it.fail("must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
            }
        }
        return tk::make_template_post_processor(std::move(items));
    }
    n.unsupported("post_processor", type, "TemplateProcessing, ByteLevel, Sequence");
}

std::unique_ptr<tk::Decoder> decoder(const Node& n) {
    const std::string type = n.type();
    if (type == "Sequence") {
        std::vector<std::unique_ptr<tk::Decoder>> parts;
        const json& list = n.array("decoders");
        for (size_t i = 0; i < list.size(); ++i) parts.push_back(decoder(n.child(list, "decoders").item(list[i], i)));
        return tk::make_sequence_decoder(std::move(parts));
    }
    if (type == "ByteLevel") return tk::make_byte_level_decoder();
    if (type == "Replace") return tk::make_replace_decoder(pattern(n), n.string("content"));
    if (type == "ByteFallback") return tk::make_byte_fallback_decoder();
    if (type == "Fuse") return tk::make_fuse_decoder();
    if (type == "Strip") {
        const int64_t start = n.integer("start"), stop = n.integer("stop");
        if (start < 0 || stop < 0) n.fail("start and stop must not be negative");
        return tk::make_strip_decoder(n.character("content"), static_cast<size_t>(start), static_cast<size_t>(stop));
    }
    if (type == "Metaspace") {
        return tk::make_metaspace_decoder(n.character("replacement"), prepend_scheme(n) != tk::PrependScheme::never);
    }
    n.unsupported("decoder", type, "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace");
}

void added_tokens(const Node& root, tk::AddedVocabulary& added) {
    const json* list = root.find("added_tokens");
    if (!list) return;
    const Node n = root.child(*list, "added_tokens");
    if (!list->is_array()) n.fail("must be an array");
    for (size_t i = 0; i < list->size(); ++i) {
        const Node t = n.item((*list)[i], i);
        tk::AddedToken a;
        const int64_t id = t.integer("id");
        if (id < 0 || id > INT32_MAX) t.fail(fmt::format("id {} is out of range", id));
        a.id = static_cast<int32_t>(id);
        a.content = t.string("content");
        a.special = t.boolean_or("special", false);
        a.normalized = t.boolean_or("normalized", !a.special);
        a.lstrip = t.boolean_or("lstrip", false);
        a.rstrip = t.boolean_or("rstrip", false);
        a.single_word = t.boolean_or("single_word", false);
        added.add(std::move(a), root.origin);
    }
}

json read_json(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    TPS_CHECK_AS(InputError, in.good(), "{}: cannot open", path.string());
    try {
        return json::parse(in);
    } catch (const json::exception& e) {
        throw InputError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
    }
}

// bos_token / eos_token of tokenizer_config.json: a string, {"content": ...} or null.
std::optional<std::string> config_token(const Node& cfg, const char* key) {
    const json* v = cfg.find(key);
    if (!v) return std::nullopt;
    if (v->is_string()) return v->get<std::string>();
    if (v->is_object()) return cfg.child(*v, key).string("content");
    cfg.fail(fmt::format("field \"{}\" must be a string or an object with \"content\"", key));
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(const std::filesystem::path& tokenizer_json,
                                  const std::filesystem::path& tokenizer_config) {
    auto impl = std::make_unique<Impl>();
    impl->origin = tokenizer_json.string();
    const json j = read_json(tokenizer_json);
    const Node root{j, impl->origin, "tokenizer"};
    if (!j.is_object()) root.fail("must be a JSON object");
    const auto part = [&](const char* key) -> const json* { return root.find(key); };
    impl->model = model(root.child(root.need("model"), "model"));
    if (const json* p = part("normalizer")) impl->normalizer = normalizer(root.child(*p, "normalizer"));
    if (const json* p = part("pre_tokenizer")) impl->pre_tokenizer = pre_tokenizer(root.child(*p, "pre_tokenizer"));
    if (const json* p = part("post_processor")) impl->post_processor = post_processor(root.child(*p, "post_processor"));
    if (const json* p = part("decoder")) impl->decoder = decoder(root.child(*p, "decoder"));
    added_tokens(root, impl->added);
    impl->added.build(impl->normalizer.get());

    Tokenizer t(std::move(impl));
    Impl& in = *t.impl_;
    if (in.post_processor) in.bos = in.post_processor->leading_special();
    if (!tokenizer_config.empty()) {
        const std::string cfg_origin = tokenizer_config.string();
        const json c = read_json(tokenizer_config);
        const Node cfg{c, cfg_origin, "tokenizer_config"};
        if (!c.is_object()) cfg.fail("must be a JSON object");
        const auto resolve = [&](const char* key, std::optional<int32_t>& slot) {
            if (const auto name = config_token(cfg, key)) {
                const auto id = t.token_id(*name);
                TPS_CHECK_AS(InputError, id.has_value(), "{}: {} '{}' is not a token of {}", cfg_origin, key, *name,
                             in.origin);
                slot = id;
            }
        };
        resolve("bos_token", in.bos);
        resolve("eos_token", in.eos);
    }
    return t;
}

Tokenizer Tokenizer::from_hf_dir(const std::filesystem::path& dir) {
    const auto json_path = dir / "tokenizer.json";
    TPS_CHECK_AS(InputError, std::filesystem::exists(json_path),
                 "{}: no tokenizer.json (tpserve reads Hugging Face fast-tokenizer files)", dir.string());
    const auto config = dir / "tokenizer_config.json";
    return from_hf_json(json_path, std::filesystem::exists(config) ? config : std::filesystem::path());
}

}  // namespace tps
