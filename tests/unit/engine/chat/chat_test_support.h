// Shared by the chat template tests: the jinja2 reference cases, the fixture templates, and the
// fixed time make_references.py gave strftime_now().
#pragma once

#include <nlohmann/json.hpp>

#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace tps::chat_test {

inline std::string fixture_path(const std::string& file) {
    return std::string(TPS_SOURCE_DIR) + "/tests/fixtures/chat_templates/" + file;
}

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

inline std::string read_template(const std::string& name) { return read_file(fixture_path(name + ".jinja")); }

inline const nlohmann::ordered_json& load_references() {
    static const nlohmann::ordered_json refs =
        nlohmann::ordered_json::parse(read_file(fixture_path("references.json")));
    return refs;
}

// make_references.py's FIXED_NOW: 2025-01-07 09:08:07, a Tuesday.
inline std::tm fixed_clock() {
    std::tm tm{};
    tm.tm_year = 2025 - 1900;
    tm.tm_mon = 0;
    tm.tm_mday = 7;
    tm.tm_hour = 9;
    tm.tm_min = 8;
    tm.tm_sec = 7;
    tm.tm_wday = 2;
    tm.tm_yday = 6;
    tm.tm_isdst = 0;
    return tm;
}

}  // namespace tps::chat_test
