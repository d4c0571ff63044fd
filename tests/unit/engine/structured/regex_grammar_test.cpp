// add_regex against std::regex (ECMAScript, which nobody here wrote): for each pattern, random
// strings, strings walked through the compiled grammar, hand-made matches and their mutations must
// be accepted exactly when std::regex_match accepts them. std::regex works on bytes, so that table
// is ASCII; non-ASCII, the Python-only choices and the errors are checked by hand below.
#include "tpserve/engine/structured/regex_grammar.h"

#include "tpserve/common/error.h"

#include "grammar_test_support.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

namespace tps::structured {
namespace {

using namespace std::string_literals;
using namespace testing_support;
using testing_support::matches;  // beside the overload below

std::shared_ptr<const CompiledGrammar> compile_regex(std::string_view pattern) {
    GrammarBuilder g;
    const RuleId root = add_regex(g, pattern);
    return g.compile(root);
}

bool matches(std::string_view pattern, std::string_view text) { return matches(compile_regex(pattern), text); }

struct RegexCase {
    std::string pattern;
    std::string alphabet;                // what random strings and mutations are made of
    std::vector<std::string> positives;  // strings std::regex matches (checked too)
    std::string reference = {};          // the std::regex spelling where it differs (named groups)
};

void PrintTo(const RegexCase& rc, std::ostream* os) { *os << "pattern '" << rc.pattern << "'"; }

class RegexVsStdRegex : public testing::TestWithParam<RegexCase> {};

TEST_P(RegexVsStdRegex, SameStringsMatch) {
    const RegexCase& rc = GetParam();
    const std::regex reference(rc.reference.empty() ? rc.pattern : rc.reference, std::regex::ECMAScript);
    const auto grammar = compile_regex(rc.pattern);
    std::mt19937 rng(1234);

    std::vector<std::string> texts = rc.positives;
    texts.push_back("");
    for (const std::string& p : rc.positives) {
        EXPECT_TRUE(std::regex_match(p, reference)) << "the test's own example '" << printable(p) << "'";
    }
    for (int i = 0; i < 300; ++i) {
        std::string text(rng() % 11, ' ');
        for (char& c : text) c = rc.alphabet[rng() % rc.alphabet.size()];
        texts.push_back(std::move(text));
    }
    for (int i = 0; i < 150; ++i) texts.push_back(walk(grammar, rc.alphabet, rng, "\r"));
    const size_t made = texts.size();
    for (size_t i = 0; i < made; ++i) {
        if (i < rc.positives.size() || i >= made - 150) texts.push_back(mutate(texts[i], rc.alphabet, rng));
    }

    int positives = 0, negatives = 0, mismatches = 0;
    for (const std::string& text : texts) {
        const bool expected = std::regex_match(text, reference);
        (expected ? positives : negatives) += 1;
        if (matches(grammar, text) != expected && ++mismatches <= 10) {
            ADD_FAILURE() << "pattern '" << rc.pattern << "' on '" << printable(text) << "': std::regex says "
                          << expected;
        }
    }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GE(positives, 10) << "too few matching strings to test with";
    EXPECT_GE(negatives, 10) << "too few strings that do not match";
}

// prefix, `times` x text, suffix (appended: "x" + std::string trips GCC 12's -Wrestrict, see below)
std::string repeated(std::string_view text, int times, std::string_view suffix = "", std::string_view prefix = "") {
    std::string out(prefix);
    for (int i = 0; i < times; ++i) out += text;
    out += suffix;
    return out;
}

const std::vector<RegexCase> kCases = {
    {"abc", "abcd", {"abc"}},
    {"a|b|cd", "abcd", {"a", "b", "cd"}},
    {"a*", "ab", {"", "aaaa"}},
    {"a+b+", "ab", {"ab", "aabbb"}},
    {"ab?c", "abc", {"ac", "abc"}},
    {"a{3}", "ab", {"aaa"}},
    {"a{2,}", "ab", {"aa", "aaaaa"}},
    {"a{1,3}b", "ab", {"ab", "aaab"}},
    {"a{0}b", "ab", {"b"}},
    {"(ab)*c", "abc", {"c", "ababc"}},
    {"(?:ab|cd)+", "abcd", {"ab", "cdab"}},
    {"(a|)b", "ab", {"b", "ab"}},
    {"(|a)+b", "ab", {"b", "aab"}},
    {"(a*)*b", "ab", {"b", "aaab"}},
    {"((a?)*)*b", "ab", {"b", "aab"}, "a*b"},  // (std::regex backtracks exponentially on the nested stars)
    {"(a?b?)*c", "abc", {"c", "abbac"}},
    {"(a?b?c?){1,2}d", "abcd", {"d", "abcbd"}},
    {"(a?){2,4}b", "ab", {"b", "aaaab"}},
    {"(a|b?)+c", "abc", {"c", "abbac"}},
    {"(a*|b*){2}c", "abc", {"c", "aabc"}},
    {"((a|b)c){1,2}d", "abcd", {"acd", "acbcd"}},
    {"(a{0,2}b){2}", "ab", {"bb", "aabab"}},
    {"a*?b", "ab", {"b", "aab"}},
    {"(ab)+?c", "abc", {"abc", "ababc"}},
    {"a{2,3}?b??", "ab", {"aa", "aaab"}},
    {"a.c", "ac\n b", {"abc", "a c"}},
    {".*x", "ax\n", {"x", "aax"}},
    {"\\d+", "019a ", {"0", "1209"}},
    {"\\D\\w\\W", "a0_ -", {"a_-", " 0 "}},
    {"\\s*\\S", " \t\n\r\f\va", {"a", " \t\n\r\f\va"}},
    {"[abc]+", "abcd", {"cab"}},
    {"[a-cx-z]*", "abdxyz", {"", "azcx"}},
    {"[^abc]", "abcd\n", {"d", "\n"}},
    {"[^a-c]+", "abcdz", {"dz"}},
    {"[\\d_]+", "0_9a", {"_0"}},
    {"[\\w-]+", "a_-.9", {"a-_9"}},
    {"[-a]b", "-ab", {"-b", "ab"}},
    {"[a\\-z]", "a-zb", {"-", "z"}},
    {"[\\]a]+", "]ab", {"]a"}},
    {"[\\s\\d]x", " 1xa\t", {" x", "1x"}},
    {"[^\\w\\s]+", "a .-\t", {".-"}},
    {"[\\b]\\t\\n\\r\\f\\v\\0", "\b\t\n\r\f\v\0a"s, {"\b\t\n\r\f\v\0"s}},
    {"\\x41\\u0042c", "ABc", {"ABc"}},
    {"\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\\\\\/\\^\\$-", ".*+?()[]{}|\\/^$-", {".*+?()[]{}|\\/^$-"}},
    {"^ab$", "ab", {"ab"}},
    {"^(a|b)*$", "abc", {"", "abba"}},
    {"(?<year>\\d{4})-(?P<m>\\d{2})", "01-", {"2024-05"}, "(\\d{4})-(\\d{2})"},
    {"-?(0|[1-9]\\d*)(\\.\\d+)?([eE][+-]?\\d+)?", "-0123.eE+", {"0", "-12.5e+3", "10E7"}},
    {"[a-z]+@[a-z]+\\.(com|org)", "ab@.comrg", {"a@b.com", "ab@ba.org"}},
    {"", "a", {""}},
    {"()", "a", {""}},
    // branches that match "" several ways, alone and in sequences
    {"(|)(|)(|)x", "xa", {"x"}},
    {"(||a|)b", "ab", {"b", "ab"}},
    {"(a?|b?)(a?|b?)c", "abc", {"c", "ac", "bac", "bbc"}},
    {"(a*|b*)(a*|b*)(a*|b*)c", "abc", {"c", "aabbac", "bbbc"}},
    {"(a?|b*|)+c", "abc", {"c", "abbac"}, "[ab]*c"},  // (std::regex is slow on these two)
    {"(|a?|(b|))*c", "abc", {"c", "abbac"}, "[ab]*c"},
    {"(a?|b?){0,3}c", "abc", {"c", "abc", "bbbc"}},
    {"(a?b?a?b?){0,2}c", "abc", {"c", "abbac", "ababbabc"}},
    {"(a?b?|c)*d", "abcd", {"d", "abcbad"}},
    {"(a|b|[bc]|d?)+e", "abcde", {"e", "dcbae"}},
    {"(a?b?)?(c?|a)c", "abc", {"c", "abcc", "aac"}},
    // the same, large: std::regex backtracks exponentially on them, so it gets a plain spelling
    {repeated("(|)", 40, "x"), "xa", {"x"}, "x"},
    // (sizes kept small for sanitizer builds: a sequence of n groups that match "" costs the
    // matcher about n^2 steps a byte; ManyNullableBranchesStayFew has larger ones)
    {repeated("(a?|b?){0,3}", 10, "c"), "abc", {"c", "abc", "babbac"}, "[ab]{0,30}c"},
    // (at most 15 runs of a's or b's)
    {repeated("(a*|b*)", 15, "c"), "abc", {"c", "aabbac", "abababababababac"},
     "((a+b+){0,7}a+|(a+b+){1,7}|(b+a+){0,7}b+|(b+a+){1,7})?c"},
    {repeated("(a?|b?)", 20, "c"), "abc", {"c", "abbac"}, "[ab]{0,20}c"},
};

// The test names are p0, p1, ... (appended rather than "p" + ..., which trips GCC 12's -Wrestrict).
std::string case_name(const testing::TestParamInfo<RegexCase>& param) {
    std::string name = "p";
    name += std::to_string(param.index);
    return name;
}
INSTANTIATE_TEST_SUITE_P(Patterns, RegexVsStdRegex, testing::ValuesIn(kCases), case_name);

TEST(RegexGrammar, NonAsciiLiteralsAndRanges) {
    const auto g = compile_regex("é+[α-ω]");
    EXPECT_TRUE(matches(g, "ééβ"));
    EXPECT_TRUE(matches(g, "éα"));
    EXPECT_TRUE(matches(g, "éω"));
    EXPECT_FALSE(matches(g, "eβ"));
    EXPECT_FALSE(matches(g, "é"));
    EXPECT_FALSE(matches(g, "éa"));
    EXPECT_TRUE(matches("[é-ê]", "ê"));
    EXPECT_FALSE(matches("[é-ê]", "e"));
    EXPECT_TRUE(matches("\\é", "é"));  // an escaped non-ASCII character is itself
}

TEST(RegexGrammar, DotIsOneWholeCharacter) {
    const auto g = compile_regex(".");
    EXPECT_TRUE(matches(g, "a"));
    EXPECT_TRUE(matches(g, "é"));
    EXPECT_TRUE(matches(g, "€"));   // 3 bytes
    EXPECT_TRUE(matches(g, "😀"));  // 4 bytes
    EXPECT_FALSE(matches(g, "\n"));
    EXPECT_FALSE(matches(g, "ab"));
    EXPECT_FALSE(matches(g, "\x80"));      // a lone continuation byte
    EXPECT_FALSE(matches(g, "\xE2\x82"));  // a truncated character
    EXPECT_FALSE(matches(g, "\xC0\xAF"));  // an overlong '/'
    EXPECT_FALSE(matches(g, "\xED\xA0\x80"));  // a surrogate
    GrammarState s(g);
    EXPECT_TRUE(s.advance("\xE2\x82"));  // a prefix of "€": alive, not yet a match
    EXPECT_FALSE(s.complete());
}

TEST(RegexGrammar, NegationsTakeNonAscii) {
    EXPECT_TRUE(matches("[^a]", "é"));
    EXPECT_TRUE(matches("[^a]", "\n"));
    EXPECT_FALSE(matches("[^a]", "a"));
    EXPECT_TRUE(matches("\\D\\W\\S", "é😀€"));
    EXPECT_FALSE(matches("\\w", "é"));
    EXPECT_TRUE(matches("[^\\x00-\\x7F]+", "éß"));
    EXPECT_FALSE(matches("[^\\x00-\\x7F]+", "a"));
    EXPECT_TRUE(matches("[^\\d]", "٣"));  // \d is ASCII only
}

TEST(RegexGrammar, UnicodeEscapes) {
    EXPECT_TRUE(matches("\\u00e9", "é"));
    EXPECT_TRUE(matches("\\u{1F600}", "😀"));
    EXPECT_TRUE(matches("\\uD83D\\uDE00", "😀"));  // a surrogate pair is one character
    EXPECT_TRUE(matches("[\\u{1F600}-\\u{1F64F}]+", "😀🙏"));
    EXPECT_TRUE(matches("\\u{41}\\x42", "AB"));
}

TEST(RegexGrammar, PythonChoicesWhereEcmaScriptDiffers) {
    EXPECT_TRUE(matches("a{", "a{"));            // a brace that starts no quantifier is a literal
    EXPECT_TRUE(matches("{}", "{}"));
    EXPECT_TRUE(matches("x{1,a}", "x{1,a}"));
    EXPECT_TRUE(matches("a{,2}", ""));           // {,m} is {0,m}
    EXPECT_TRUE(matches("a{,2}", "aa"));
    EXPECT_FALSE(matches("a{,2}", "aaa"));
    EXPECT_TRUE(matches("a{,}", "aaaa"));        // {,} is *
    EXPECT_TRUE(matches("]", "]"));
    EXPECT_TRUE(matches("}", "}"));
    EXPECT_TRUE(matches("[]a]+", "]a"));         // a ']' first in a class is a literal
    EXPECT_TRUE(matches("[^]a]", "b"));
    EXPECT_FALSE(matches("[^]a]", "]"));
    EXPECT_TRUE(matches("[a-]", "-"));
    EXPECT_TRUE(matches(".", "\r"));             // only "\n" is refused by '.'
}

TEST(RegexGrammar, PrefixStates) {
    const auto g = compile_regex("abc");
    GrammarState s(g);
    ASSERT_TRUE(s.advance("ab"));
    EXPECT_FALSE(s.dead());
    EXPECT_FALSE(s.complete());
    EXPECT_TRUE(s.can_continue());
    GrammarState wrong = s;
    EXPECT_FALSE(wrong.advance("d"));
    EXPECT_TRUE(wrong.dead());
    ASSERT_TRUE(s.advance("c"));
    EXPECT_TRUE(s.complete());
    EXPECT_FALSE(s.can_continue());
}

TEST(RegexGrammar, GrammarStaysSmall) {
    GrammarBuilder g;
    add_regex(g, "abcdef");
    EXPECT_EQ(g.rule_count(), 1u);  // one sequence of bytes, no rule per character
    GrammarBuilder h;
    add_regex(h, "[a-z]+x");
    EXPECT_LE(h.rule_count(), 4u);
    GrammarBuilder dots;
    add_regex(dots, "......");
    EXPECT_LE(dots.rule_count(), 2u);  // the rule for '.' is made once
}

TEST(RegexGrammar, LongNullableRepetitionIsLinear) {
    // (a?b?...){0,2}: the repetition needs its body less "", which spelled out naively is quadratic
    GrammarBuilder g;
    const RuleId root = add_regex(g, repeated("a?b?", 150, "){0,2}c", "("));
    EXPECT_LT(g.rule_count(), 3000u);
    const auto compiled = g.compile(root);
    EXPECT_TRUE(matches(compiled, "c"));
    EXPECT_FALSE(matches(compiled, "d"));
    const auto shorter = compile_regex(repeated("a?b?", 20, "){0,2}c", "("));
    EXPECT_TRUE(matches(shorter, "abbaababc"));
    EXPECT_TRUE(matches(shorter, repeated("ab", 40, "c")));
    EXPECT_FALSE(matches(shorter, repeated("ab", 40, "bc")));
    EXPECT_FALSE(matches(shorter, "abd"));
    // (a?b?...)* is (a|b|...)*: a small grammar that reads long texts quickly
    GrammarBuilder h;
    const RuleId star = add_regex(h, repeated("a?b?", 150, ")*c", "("));
    EXPECT_LT(h.rule_count(), 10u);
    const auto star_compiled = h.compile(star);
    EXPECT_TRUE(matches(star_compiled, "c"));
    EXPECT_TRUE(matches(star_compiled, "abbaababc"));
    EXPECT_TRUE(matches(star_compiled, repeated("ba", 1000, "c")));
    EXPECT_FALSE(matches(star_compiled, "abd"));
}

// Branches that match "" in several ways were once followed one by one by the matcher: (|) twice
// per group, so 2^40 readings of "" for 40 groups (hours, or "too ambiguous" from the matcher's
// cap). Now an alternation has one "" branch, and all of this takes milliseconds.
TEST(RegexGrammar, ManyNullableBranchesStayFew) {
    const auto empties = compile_regex(repeated("(|)", 40, "x"));
    EXPECT_TRUE(matches(empties, "x"));
    EXPECT_FALSE(matches(empties, ""));
    EXPECT_FALSE(matches(empties, "xx"));
    EXPECT_FALSE(matches(empties, "a"));
    EXPECT_TRUE(matches(repeated("(|)", 2000, "x"), "x"));
    EXPECT_TRUE(matches(repeated("(||a?|b*|)", 40, "x"), "aabbbax"));

    const std::string segments = repeated("(a?|b?){0,3}c", 30);
    const auto g = compile_regex(segments);
    const std::regex reference(repeated("[ab]{0,3}c", 30));
    const std::vector<std::string> texts = {
        repeated("c", 30), repeated("c", 29), repeated("c", 31), repeated("c", 29, "", "abbc"),
        repeated("c", 29, "", "aaaac"), repeated("bac", 30), repeated("abac", 30), repeated("abac", 29, "abaac"),
        repeated("ac", 29, "d"),
    };
    for (const std::string& text : texts) EXPECT_EQ(matches(g, text), std::regex_match(text, reference)) << text;
    EXPECT_TRUE(matches(g, repeated("abac", 30)));
    EXPECT_FALSE(matches(g, repeated("c", 29, "", "aaaac")));

    const auto runs = compile_regex(repeated("(a*|b*)", 40, "c"));
    EXPECT_TRUE(matches(runs, "c"));
    EXPECT_TRUE(matches(runs, repeated("ab", 20, "c")));          // 40 runs
    EXPECT_FALSE(matches(runs, repeated("ab", 20, "ac")));        // 41
    EXPECT_TRUE(matches(runs, repeated("a", 100, "bc")));
    EXPECT_FALSE(matches(runs, "abd"));

    const auto optionals = compile_regex(repeated("(a?|b?)", 40, "x"));
    EXPECT_TRUE(matches(optionals, repeated("ab", 20, "x")));
    EXPECT_FALSE(matches(optionals, repeated("ab", 20, "ax")));
    EXPECT_TRUE(matches(optionals, "x"));
}

TEST(RegexGrammar, NonAsciiBranchesMerge) {
    const auto g = compile_regex("(é|a|[α-β]|€?)+x");
    EXPECT_TRUE(matches(g, "éaβ€x"));
    EXPECT_TRUE(matches(g, "x"));
    EXPECT_FALSE(matches(g, "γx"));
    EXPECT_FALSE(matches(g, "\xC3x"));
}

// The message of the UsageError that compiling `pattern` throws ("" when none).
std::string error_of(std::string_view pattern) {
    try {
        compile_regex(pattern);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

TEST(RegexGrammar, RefusedConstructsNameThemselves) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"a\\1", "backreference"},
        {"(a)\\k<x>", "backreference \\k<name>"},
        {"(?P<n>a)(?P=n)", "backreference (?P=name)"},
        {"a(?=b)", "lookahead"},
        {"a(?!b)", "lookahead"},
        {"(?<=a)b", "lookbehind"},
        {"(?<!a)b", "lookbehind"},
        {"\\bfoo", "word boundary \\b"},
        {"a\\B", "word boundary \\B"},
        {"\\Aa", "anchor \\A"},
        {"a\\Z", "anchor \\Z"},
        {"a\\z", "anchor \\z"},
        {"(?i)a", "inline flag"},
        {"(?i:a)", "inline flag"},
        {"(?>a)", "group extension"},
        {"(a", "unbalanced '('"},
        {"a)", "unbalanced ')'"},
        {"*a", "nothing to repeat"},
        {"a|+b", "nothing to repeat"},
        {"(?:?a)", "nothing to repeat"},
        {"{2}a", "nothing to repeat"},
        {"^*a", "nothing to repeat"},
        {"a**", "multiple repeat"},
        {"a{2}{3}", "multiple repeat"},
        {"a???", "multiple repeat"},
        {"a*+", "possessive"},
        {"a{2}+", "possessive"},
        {"a{3,2}", "maximum is below its minimum"},
        {"[abc", "unterminated class"},
        {"[]", "empty class"},
        {"[^]", "empty class"},
        {"[z-a]", "wrong way round"},
        {"[\\d-z]", "class such as \\d"},
        {"[a-\\w]", "class such as \\d"},
        {"a{10001}", "above the 10000"},
        {"a{1,20000}", "above the 10000"},
        {"a{99999999999999999999999}", "above the 10000"},
        {"a^", "'^'"},
        {"(^a)", "'^'"},
        {"a$b", "'$'"},
        {"(a$)", "'$'"},
        {"a\\", "backslash at the end"},
        {"\\p{L}", "Unicode property"},
        {"\\q", "unknown escape \\q"},
        {"\\x4", "hex digits"},
        {"\\u12", "hex digits"},
        {"\\u{}", "\\u{...}"},
        {"\\u{110000}", "past U+10FFFF"},
        {"\\uD800", "lone surrogate"},
        {"\\uD800\\u0041", "lone surrogate"},
        {"\\u{DC00}", "surrogate"},
        {"\\01", "octal"},
        {"[^\\s\\S]", "admits no character"},
        {"(?<1a>x)", "invalid group name"},
        {"(?<a>x)(?<a>y)", "used twice"},
        {"(?<a", "unterminated group name"},
        {"a\x80", "invalid UTF-8"},
        {"\xC3", "invalid UTF-8"},
        {"\xC0\xAF", "invalid UTF-8"},
        {"\xED\xA0\x80", "invalid UTF-8"},
        {"\xF4\x90\x80\x80", "invalid UTF-8"},
        {std::string(201, '(') + "a" + std::string(201, ')'), "deeper than 200"},
    };
    for (const auto& [pattern, needle] : cases) {
        const std::string message = error_of(pattern);
        EXPECT_NE(message.find(needle), std::string::npos)
            << "pattern '" << printable(pattern) << "' gave '" << message << "', expected it to name '" << needle << "'";
        EXPECT_NE(message.find("offset"), std::string::npos) << message;
    }
}

TEST(RegexGrammar, ErrorsGiveTheOffset) {
    EXPECT_NE(error_of("ab\\1").find("offset 2 "), std::string::npos) << error_of("ab\\1");
    EXPECT_NE(error_of("abc(?=x)").find("offset 3 "), std::string::npos) << error_of("abc(?=x)");
    EXPECT_NE(error_of("ab[z-a]").find("offset 3 "), std::string::npos) << error_of("ab[z-a]");
}

TEST(RegexGrammar, DeepButAllowedNesting) {
    const std::string pattern = std::string(200, '(') + "a" + std::string(200, ')');
    EXPECT_TRUE(matches(pattern, "a"));
}

}  // namespace
}  // namespace tps::structured
