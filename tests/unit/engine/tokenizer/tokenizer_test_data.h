// Shared by the tokenizer tests: the fixture paths, texts.json (the inputs, invalid UTF-8 given as
// hex bytes) and references.json (what Hugging Face tokenizers returns for each tokenizer).
#pragma once

#include "tpserve/engine/tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace tps::test {

inline std::filesystem::path source_dir() { return TPS_SOURCE_DIR; }
inline std::filesystem::path fixture(const std::string& rel) { return source_dir() / "tests/fixtures" / rel; }

inline nlohmann::json read_json_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + p.string());
    return nlohmann::json::parse(in);
}

inline const nlohmann::json& references() {
    static const nlohmann::json j = read_json_file(fixture("tokenizers/references.json"));
    return j;
}

struct TextCase {
    std::string name;
    std::string category;
    std::string input;  // the exact bytes given to encode()
};

inline std::string from_hex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
}

inline const std::vector<TextCase>& texts() {
    static const std::vector<TextCase> t = [] {
        std::vector<TextCase> out;
        const nlohmann::json file = read_json_file(fixture("tokenizers/texts.json"));
        for (const auto& e : file["texts"]) {
            TextCase c;
            c.name = e["name"].get<std::string>();
            c.category = e["category"].get<std::string>();
            c.input = e.contains("bytes_hex") ? from_hex(e["bytes_hex"].get<std::string>()) : e["text"].get<std::string>();
            out.push_back(std::move(c));
        }
        return out;
    }();
    return t;
}

inline std::vector<int32_t> ids_of(const nlohmann::json& a) { return a.get<std::vector<int32_t>>(); }

}  // namespace tps::test
