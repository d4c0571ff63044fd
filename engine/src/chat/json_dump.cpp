// Python's json.dumps over template values, as transformers' tojson filter calls it (ensure_ascii
// defaults to False there, unlike jinja2's own tojson, which also HTML-escapes). Floats print as
// Python's repr, keys keep their insertion order unless sort_keys, and an indent puts one item per line.
#include "builtins.h"

#include "pystr.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace tps::chat {
namespace {

void append_escaped(std::string& out, std::string_view text, bool ensure_ascii) {
    out += '"';
    for (const auto bytes : pystr::code_points(text)) {
        const auto first = static_cast<unsigned char>(bytes[0]);
        switch (first) {
            case '"': out += "\\\""; continue;
            case '\\': out += "\\\\"; continue;
            case '\n': out += "\\n"; continue;
            case '\r': out += "\\r"; continue;
            case '\t': out += "\\t"; continue;
            case '\b': out += "\\b"; continue;
            case '\f': out += "\\f"; continue;
            default: break;
        }
        if (first < 0x20 || (ensure_ascii && first == 0x7F)) {
            out += fmt::format("\\u{:04x}", first);
        } else if (first < 0x80 || !ensure_ascii) {
            out += bytes;
        } else {
            const char32_t cp = pystr::first_code_point(bytes);
            if (cp >= 0x10000) {  // a UTF-16 surrogate pair, as Python writes it
                const char32_t v = cp - 0x10000;
                out += fmt::format("\\u{:04x}\\u{:04x}", static_cast<uint32_t>(0xD800 + (v >> 10)),
                                   static_cast<uint32_t>(0xDC00 + (v & 0x3FF)));
            } else {
                out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
            }
        }
    }
    out += '"';
}

class Dumper {
public:
    explicit Dumper(const JsonStyle& style) : style_(style) {}

    void dump(const Value& v, int level) {
        if (level > 512) throw EvalError("tojson: the value is nested too deeply");
        switch (v.kind()) {
            case Value::Kind::none: out_ += "null"; return;
            case Value::Kind::boolean: out_ += v.as_bool() ? "true" : "false"; return;
            case Value::Kind::integer: out_ += std::to_string(v.as_int()); return;
            case Value::Kind::floating: {
                const double d = v.as_float();
                if (std::isnan(d)) out_ += "NaN";
                else if (std::isinf(d)) out_ += d < 0 ? "-Infinity" : "Infinity";
                else out_ += format_float(d);
                return;
            }
            case Value::Kind::string: append_escaped(out_, v.as_string(), style_.ensure_ascii); return;
            case Value::Kind::list: {
                const auto& items = v.as_list().items;
                if (items.empty()) {
                    out_ += "[]";
                    return;
                }
                out_ += '[';
                for (size_t i = 0; i < items.size(); ++i) {
                    separate(i, level + 1);
                    dump(items[i], level + 1);
                }
                close(level, ']');
                return;
            }
            case Value::Kind::dict: {
                std::vector<const std::pair<std::string, Value>*> entries;
                for (const auto& e : v.as_dict().items) entries.push_back(&e);
                if (entries.empty()) {
                    out_ += "{}";
                    return;
                }
                if (style_.sort_keys) {
                    std::stable_sort(entries.begin(), entries.end(),
                                     [](const auto* a, const auto* b) { return a->first < b->first; });
                }
                out_ += '{';
                for (size_t i = 0; i < entries.size(); ++i) {
                    separate(i, level + 1);
                    append_escaped(out_, entries[i]->first, style_.ensure_ascii);
                    out_ += style_.key_separator;
                    dump(entries[i]->second, level + 1);
                }
                close(level, '}');
                return;
            }
            case Value::Kind::undefined:
            case Value::Kind::object:
            case Value::Kind::builtin: break;
        }
        throw EvalError(fmt::format("Object of type {} is not JSON serializable", type_name(v)));
    }

    std::string take() { return std::move(out_); }

private:
    void separate(size_t index, int level) {
        if (index) out_ += style_.item_separator;
        if (style_.indent) newline(level);
    }
    void close(int level, char bracket) {
        if (style_.indent) newline(level);
        out_ += bracket;
    }
    void newline(int level) {
        out_ += '\n';
        for (int i = 0; i < level; ++i) out_ += *style_.indent;
    }

    const JsonStyle& style_;
    std::string out_;
};

}  // namespace

std::string json_dumps(const Value& v, const JsonStyle& style) {
    Dumper d(style);
    d.dump(v, 0);
    return d.take();
}

}  // namespace tps::chat
