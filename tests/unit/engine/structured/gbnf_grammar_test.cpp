// gbnf_grammar against references nobody here wrote: GBNF grammars of regular languages against
// std::regex (ECMAScript) on random, walked and mutated strings; non-regular grammars and
// llama.cpp's own example grammars (json.gbnf, arithmetic.gbnf, list.gbnf) on hand-made texts;
// and every refused input, with where it is.
#include "tpserve/engine/structured/gbnf_grammar.h"

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

bool matches(std::string_view gbnf, std::string_view text) { return matches(gbnf_grammar(gbnf), text); }

struct GbnfCase {
    std::string gbnf;
    std::string regex;                   // the same language, ECMAScript
    std::string alphabet;                // what random strings and mutations are made of
    std::vector<std::string> positives;  // strings std::regex matches (checked too)
};

void PrintTo(const GbnfCase& c, std::ostream* os) { *os << "grammar '" << printable(c.gbnf) << "'"; }

class GbnfVsStdRegex : public testing::TestWithParam<GbnfCase> {};

TEST_P(GbnfVsStdRegex, SameStringsMatch) {
    const GbnfCase& gc = GetParam();
    const std::regex reference(gc.regex, std::regex::ECMAScript);
    const auto grammar = gbnf_grammar(gc.gbnf);
    std::mt19937 rng(4321);

    std::vector<std::string> texts = gc.positives;
    texts.push_back("");
    for (const std::string& p : gc.positives) {
        EXPECT_TRUE(std::regex_match(p, reference)) << "the test's own example '" << printable(p) << "'";
    }
    for (int i = 0; i < 300; ++i) {
        std::string text(rng() % 11, ' ');
        for (char& c : text) c = gc.alphabet[rng() % gc.alphabet.size()];
        texts.push_back(std::move(text));
    }
    for (int i = 0; i < 150; ++i) texts.push_back(walk(grammar, gc.alphabet, rng));
    const size_t made = texts.size();
    for (size_t i = 0; i < made; ++i) {
        if (i < gc.positives.size() || i >= made - 150) texts.push_back(mutate(texts[i], gc.alphabet, rng));
    }

    int positives = 0, negatives = 0, mismatches = 0;
    for (const std::string& text : texts) {
        const bool expected = std::regex_match(text, reference);
        (expected ? positives : negatives) += 1;
        if (matches(grammar, text) != expected && ++mismatches <= 10) {
            ADD_FAILURE() << "on '" << printable(text) << "': std::regex says " << expected;
        }
    }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GE(positives, 10) << "too few matching strings to test with";
    EXPECT_GE(negatives, 10) << "too few strings that do not match";
}

const std::vector<GbnfCase> kCases = {
    {R"(root ::= "abc")", "abc", "abcd", {"abc"}},
    {R"(root ::= "a" | "b" | "cd")", "a|b|cd", "abcd", {"a", "b", "cd"}},
    {R"(root ::= "a"*)", "a*", "ab", {"", "aaaa"}},
    {R"(root ::= "a"+ "b"+)", "a+b+", "ab", {"ab", "aabbb"}},
    {R"(root ::= "a" "b"? "c")", "ab?c", "abc", {"ac", "abc"}},
    {R"(root ::= "a"{3})", "a{3}", "ab", {"aaa"}},
    {R"(root ::= "a"{2,})", "a{2,}", "ab", {"aa", "aaaaa"}},
    {R"(root ::= "a"{1,3} "b")", "a{1,3}b", "ab", {"ab", "aaab"}},
    {R"(root ::= "a"{ 0 } "b" "c"{ 1 , 2 })", "bc{1,2}", "abc", {"bc", "bcc"}},
    {R"(root ::= ("ab")* "c")", "(ab)*c", "abc", {"c", "ababc"}},
    {"root ::= x+\nx ::= \"ab\" | \"cd\"", "(ab|cd)+", "abcd", {"ab", "cdab"}},
    {R"(root ::= ("a" | "") "b")", "(a|)b", "ab", {"b", "ab"}},
    {R"(root ::= ("" | "a")+ "b")", "a*b", "ab", {"b", "aab"}},
    {R"(root ::= ("a"*)* "b" "c"?* "d"?+)", "a*bc*d*", "abcd", {"b", "aabccdd"}},
    {"root ::= opt* \"c\"\nopt ::= \"a\"? \"b\"?", "[ab]*c", "abc", {"c", "abbac"}},
    {R"(root ::= ("a"? "b"? "c"?){1,2} "d")", "(a?b?c?){1,2}d", "abcd", {"d", "abcbd"}},
    {R"(root ::= ("a"?){2,4} "b" ("c"?){2,} "d")", "a{0,4}bc*d", "abcd", {"bd", "aaaabccd"}},
    {"root ::= x x \"c\"\nx ::= \"a\"* | \"b\"*", "(a*|b*){2}c", "abc", {"c", "aabc", "bbc"}},
    {"root ::= (a b | \"\")+ \"c\"\na ::= \"a\"?\nb ::= \"b\"*", "[ab]*c", "abc", {"c", "abbac"}},
    {"root ::= (a | b | \"\" | a b)* \"c\"\na ::= \"a\"?\nb ::= (\"b\" a)*", "[ab]*c", "abc", {"c", "abbac"}},
    {"root ::= [a-c]+ [^a-c]", "[a-c]+[^a-c]", "abcdz\n", {"ad", "cba\n"}},
    {R"(root ::= [a-] [-x] [xa-c])", "[a-][-x][xa-c]", "abcx-", {"a-x", "-xb"}},
    {R"(root ::= "a" . "c")", "a[^]c", "ac\n b", {"abc", "a\nc", "acc"}},
    {R"(root ::= "\x41\u0042\U00000043\t\n\r\\\"\[\]")", "ABC\\t\\n\\r\\\\\"\\[\\]", "ABC\t\n\r\\\"[]",
     {"ABC\t\n\r\\\"[]"}},
    {R"(root ::= [\x30-\x39\n\]\[\\\"\t]+)", "[0-9\\n\\]\\[\\\\\"\\t]+", "09a\n[]\\\"\t", {"0\n]", "[\\\"\t9"}},
    {R"(root ::= "-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?)", "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?",
     "-0123.eE+", {"0", "-12.5e+3", "10E7"}},
    {"# a list of words\nroot ::= item (\",\" ws item)*  # trailing comment\nitem ::= [a-z]+\n  | \"(\" [0-9] \")\"\n"
     "ws ::= [ \\t]*\n",
     "([a-z]+|\\([0-9]\\))(,[ \\t]*([a-z]+|\\([0-9]\\)))*", "ab,( 1)\t", {"ab", "a, (1),\tb"}},
    {"ws ::= \" \"?\nroot ::= ws word ws\nword ::= [a-z]{2,3}", " ?[a-z]{2,3} ?", "ab ", {"ab", " aba "}},
    {"root ::= (\n  \"a\" |\n  \"b\" \"c\"\n)+\n\n", "(a|bc)+", "abc", {"a", "bca"}},
    {"root::=\"a\"root2\nroot2::=\"b\"|\"\"", "ab?", "ab", {"a", "ab"}},
};

std::string case_name(const testing::TestParamInfo<GbnfCase>& param) {
    std::string name = "g";
    name += std::to_string(param.index);
    return name;
}
INSTANTIATE_TEST_SUITE_P(Grammars, GbnfVsStdRegex, testing::ValuesIn(kCases), case_name);

TEST(GbnfGrammar, BalancedParentheses) {
    const auto g = gbnf_grammar(R"g(root ::= "" | "(" root ")" root)g");
    for (const char* ok : {"", "()", "(())", "()()", "(()())()", "((()))(())"}) EXPECT_TRUE(matches(g, ok)) << ok;
    for (const char* bad : {"(", ")", "())", "(()", ")(", "(()))(", "a"}) EXPECT_FALSE(matches(g, bad)) << bad;
}

TEST(GbnfGrammar, NestedLists) {
    const auto g = gbnf_grammar("root ::= list\nlist ::= \"[\" (item (\",\" item)*)? \"]\"\nitem ::= list | [0-9]+\n");
    for (const char* ok : {"[]", "[1]", "[1,[2,3],[]]", "[[[[]]]]", "[12,[[3]],4]"}) EXPECT_TRUE(matches(g, ok)) << ok;
    for (const char* bad : {"", "[", "[1,]", "[,1]", "[[]", "[1]]", "1", "[1 2]"}) EXPECT_FALSE(matches(g, bad)) << bad;
}

TEST(GbnfGrammar, Arithmetic) {
    const auto g = gbnf_grammar(
        "root ::= expr\nexpr ::= term ((\"+\"|\"-\") term)*\nterm ::= [0-9]+ | \"(\" expr \")\"");
    for (const char* ok : {"1", "12+3", "(1-2)+3", "((4))", "1+(2-(3+45))-6"}) EXPECT_TRUE(matches(g, ok)) << ok;
    for (const char* bad : {"", "+1", "1+", "(1", "1)", "()", "1++2", "(1)(2)"}) EXPECT_FALSE(matches(g, bad)) << bad;
}

// llama.cpp's grammars/json.gbnf
constexpr std::string_view kLlamaJson = R"g(root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
)g";

TEST(GbnfGrammar, LlamaCppJson) {
    const auto g = gbnf_grammar(kLlamaJson);
    const std::vector<std::string> valid = {
        "{}", R"({"a": 1})", R"({"a":[1,2.5,-3e5,true,false,null],"b":{"c":"d\n\u00e9\"é"}})",
        "{\n  \"key\": [ ]\n}", R"({"x": {"y": {"z": []}}})", R"({"s": "tab\tquote\\"} )",
    };
    for (const std::string& text : valid) EXPECT_TRUE(matches(g, text)) << text;
    const std::vector<std::string> invalid = {
        "", "[]", "1", R"({"a" 1})", R"({"a": 1,})", R"({a: 1})", R"({"a": tru})", "{\"a\": \"x\ny\"}",
        R"({"a": "\q"})", R"({"a": 01.})", R"({"a": [1 2]})", "{}}", R"({"a": "\u12G4"})",
    };
    for (const std::string& text : invalid) EXPECT_FALSE(matches(g, text)) << text;
}

TEST(GbnfGrammar, LlamaCppArithmeticAndList) {
    const auto arithmetic = gbnf_grammar(R"g(root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
)g");
    EXPECT_TRUE(matches(arithmetic, "1+2=3\n"));
    EXPECT_TRUE(matches(arithmetic, "( x_1 *2 )/y = z\nb=1\n"));
    EXPECT_FALSE(matches(arithmetic, "1+2=3"));
    EXPECT_FALSE(matches(arithmetic, "1+=3\n"));
    EXPECT_FALSE(matches(arithmetic, "X=1\n"));

    const auto list = gbnf_grammar("root ::= item+\n\n# Excludes various line break characters\n"
                                   "item ::= \"- \" [^\\r\\n\\x0b\\x0c\\x85\\u2028\\u2029]+ \"\\n\"\n");
    EXPECT_TRUE(matches(list, "- one\n- two é\n"));
    EXPECT_FALSE(matches(list, "- \n"));
    EXPECT_FALSE(matches(list, "- a\u2028b\n"));
    EXPECT_FALSE(matches(list, "- a\xc2\x85" "b\n"));
    EXPECT_FALSE(matches(list, "one\n"));
}

TEST(GbnfGrammar, Utf8ClassesAndDot) {
    const auto greek = gbnf_grammar(R"(root ::= [α-ω]+ "é" [^a-z])");
    EXPECT_TRUE(matches(greek, "αβωéé"));
    EXPECT_TRUE(matches(greek, "λé😀"));
    EXPECT_FALSE(matches(greek, "aé!"));
    EXPECT_FALSE(matches(greek, "αéa"));
    EXPECT_FALSE(matches(greek, "αe!"));

    const auto dot = gbnf_grammar("root ::= .");
    for (const char* one : {"a", "\n", "\x7f", "é", "€", "😀"}) EXPECT_TRUE(matches(dot, one)) << printable(one);
    for (const char* bad : {"", "ab", "\x80", "\xE2\x82", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80"}) {
        EXPECT_FALSE(matches(dot, bad)) << printable(bad);
    }
    GrammarState prefix(dot);
    EXPECT_TRUE(prefix.advance("\xF0\x9F\x98"));  // three bytes of "😀": alive, not a match yet
    EXPECT_FALSE(prefix.complete());

    EXPECT_TRUE(matches(R"(root ::= "\u00e9\xe9" [\U0001F600-\U0001F64F]+)", "éé😀🙏"));
    EXPECT_TRUE(matches(R"(root ::= [^\x00-\x7F]{2})", "é€"));
    EXPECT_FALSE(matches(R"(root ::= [^\x00-\x7F]{2})", "éa"));
    EXPECT_TRUE(matches("root ::= \"日本\" [語]", "日本語"));
    EXPECT_TRUE(matches("root ::= [^]", "\xF0\x9F\x98\x80"));
}

TEST(GbnfGrammar, LongNullableSequencesStaySmallAndFast) {
    std::string gbnf = "root ::= (";
    for (int i = 0; i < 100; ++i) gbnf += "\"a\"? \"b\"? ";
    gbnf += "){0,2} \"c\"\nstar ::= (x x x x)*\nx ::= \"a\"?";
    const auto g = gbnf_grammar(gbnf);
    EXPECT_TRUE(matches(g, "c"));
    EXPECT_TRUE(matches(g, "ababbac"));
    EXPECT_FALSE(matches(g, "abd"));
}

// Branches that match "" in several ways keep one "" branch: 40 groups of (""|"a"?|b) with b
// nullable would otherwise read "" 3^40 ways and hit the matcher's cap on ambiguity.
TEST(GbnfGrammar, ManyNullableBranchesStayFew) {
    std::string gbnf = "root ::= ";
    for (int i = 0; i < 40; ++i) gbnf += "(\"\" | \"a\"? | b) ";
    gbnf += "\"x\"\nb ::= \"b\"* | \"\"";
    const auto g = gbnf_grammar(gbnf);
    EXPECT_TRUE(matches(g, "x"));
    EXPECT_TRUE(matches(g, "abbbax"));
    EXPECT_FALSE(matches(g, "abcx"));
    std::string many_a(40, 'a');
    EXPECT_TRUE(matches(g, many_a + "x"));
    EXPECT_FALSE(matches(g, many_a + "ax"));
}

// The message of the UsageError that compiling `gbnf` throws ("" when none).
std::string error_of(std::string_view gbnf) {
    try {
        gbnf_grammar(gbnf);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

// root ::= ((((...("a")...)))) with 201 groups
std::string repeated_groups() {
    std::string out = "root ::= ";
    out.append(201, '(');
    out += "\"a\"";
    out.append(201, ')');
    return out;
}

TEST(GbnfGrammar, ErrorsSayWhatAndWhere) {
    const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
        {"root ::= foo", {"line 1, column 10", "'foo'", "never defined"}},
        {"root ::= \"a\"\nx ::= \"b\"\n  root ::= \"c\"", {"line 3, column 3", "'root' is defined twice", "line 1, column 1"}},
        {"start ::= \"a\"", {"no rule 'root'"}},
        {"", {"no rule 'root'"}},
        {"root ::= \"abc", {"line 1, column 10", "unterminated string"}},
        {"root ::= [abc", {"line 1, column 10", "unterminated class"}},
        {"root ::=\n  (\"a\" | \"b\"\nx ::= \"c\"", {"line 2, column 3", "unterminated group"}},
        {"root ::= (\"a\"", {"line 1, column 10", "unterminated group"}},
        {"root ::= \"a\")", {"line 1, column 13", "closes no group"}},
        {"root ::= \"\\q\"", {"line 1, column 11", "unknown escape '\\q'"}},
        {"root ::= [\\d]", {"line 1, column 11", "unknown escape '\\d'"}},
        {"root ::= \"\\x4\"", {"line 1, column 11", "2 hex digits"}},
        {"root ::= \"\\uD800\"", {"surrogate"}},
        {"root ::= \"\\U00110000\"", {"past U+10FFFF"}},
        {"root ::= []", {"line 1, column 10", "empty class"}},
        {"root ::= [^\\x00-\\U0010FFFF]", {"empty class"}},
        {"root ::= [z-a]", {"line 1, column 11", "wrong way round"}},
        {"root ::= \"a\"{3,2}", {"line 1, column 13", "maximum below its minimum"}},
        {"root ::= \"a\"{10001}", {"above the 10000 supported"}},
        {"root ::= \"a\"{1,99999999999999999999}", {"above the 10000 supported"}},
        {"root ::= \"a\"{x}", {"expected a number"}},
        {"root ::= \"a\"{2", {"expected ',' or '}'"}},
        {"root ::= * \"a\"", {"line 1, column 10", "nothing to repeat"}},
        {"root ::= \"a\" ; \"b\"", {"line 1, column 14", "unexpected character ';'"}},
        {"root \"a\"", {"line 1, column 6", "expected '::='"}},
        {"::= \"a\"", {"line 1, column 1", "expected a rule name"}},
        {"root ::= \"a\xff\"", {"line 1, column 12", "invalid UTF-8"}},
        {"root ::= \"é\" \"\\z\"", {"line 1, column 15", "unknown escape"}},  // columns count characters
        {"root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]", {"'expr' is left-recursive"}},
        {"root ::= a\na ::= b? root\nb ::= \"x\"", {"left-recursive"}},
        {"root ::= x\nx ::= \"a\" x", {"no finite text"}},
        {std::string(kMaxGbnfBytes + 1, ' '), {"more than the 65536 supported"}},
        {repeated_groups(), {"nested deeper than 200"}},
    };
    for (const auto& [gbnf, parts] : cases) {
        const std::string message = error_of(gbnf);
        EXPECT_TRUE(message.starts_with("GBNF: ")) << printable(gbnf.substr(0, 60)) << ": " << message;
        for (const std::string& part : parts) {
            EXPECT_NE(message.find(part), std::string::npos)
                << printable(gbnf.substr(0, 60)) << ": '" << message << "' lacks '" << part << "'";
        }
    }
}

}  // namespace
}  // namespace tps::structured
