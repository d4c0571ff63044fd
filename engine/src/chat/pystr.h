// Python's str semantics over UTF-8 text, for the chat-template interpreter: templates index, slice,
// strip and split by code points, and Python's whitespace (str.isspace) and line breaks
// (str.splitlines) are wider than ASCII's. Case mapping covers Latin, Greek and Cyrillic letters
// (pystr.cpp says which exceptions); letters of other scripts are left as they are.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tps::chat::pystr {

// UTF-8. Decoding is lenient: a byte that starts no valid sequence decodes as U+FFFD.
bool valid_utf8(std::string_view text);
void append_utf8(std::string& out, char32_t cp);
// Each code point of `text` as its bytes, in order.
std::vector<std::string_view> code_points(std::string_view text);
size_t length(std::string_view text);  // in code points
char32_t first_code_point(std::string_view text);  // U+FFFD for an empty or invalid start

bool is_space(char32_t cp);  // str.isspace()
// Bytes of the whitespace (str.isspace) run starting at `pos`.
size_t space_run(std::string_view text, size_t pos);
// str.strip() family; `chars` nullopt strips whitespace.
std::string strip(std::string_view text, std::optional<std::string_view> chars, bool left, bool right);

// str.split(sep, maxsplit): sep nullopt splits on whitespace runs. An empty sep is the caller's error.
std::vector<std::string> split(std::string_view text, std::optional<std::string_view> sep, int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view text);
std::string replace(std::string_view text, std::string_view old, std::string_view repl, int64_t count);

std::string upper(std::string_view text);
std::string lower(std::string_view text);
std::string capitalize(std::string_view text);  // str.capitalize()
std::string title(std::string_view text);       // str.title()
std::string jinja_title(std::string_view text);  // jinja2's |title: words begin after - ( { [ < or space
bool is_lower(std::string_view text);           // str.islower()
bool is_upper(std::string_view text);           // str.isupper()

std::string repr(std::string_view text);  // repr(str): quoted and escaped as Python prints it

}  // namespace tps::chat::pystr
