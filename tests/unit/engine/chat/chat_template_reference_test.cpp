// Every case jinja2 rendered into tests/fixtures/chat_templates/references.json (real model templates
// over many conversations, and small templates pinning one jinja2 behaviour each) must come out of
// tps::ChatTemplate byte for byte, or fail with the same message jinja2 raised.
#include "chat_test_support.h"

#include "tpserve/common/error.h"
#include "tpserve/engine/chat_template.h"

#include <gtest/gtest.h>

#include <set>

namespace tps {
namespace {

using chat_test::load_references;
using nlohmann::ordered_json;

class ReferenceCase : public ::testing::TestWithParam<size_t> {};

TEST_P(ReferenceCase, MatchesJinja2) {
    const ordered_json& c = load_references()["cases"][GetParam()];
    const std::string name = c["name"];
    const std::string source = c.contains("template") ? chat_test::read_template(c["template"].get<std::string>())
                                                      : c["source"].get<std::string>();
    ChatTemplate t(source, name);
    t.set_clock(chat_test::fixed_clock);
    if (c.contains("output")) {
        EXPECT_EQ(t.render(c["context"]), c["output"].get<std::string>()) << name;
        return;
    }
    const std::string expected = c["error"];
    try {
        const std::string out = t.render(c["context"]);
        ADD_FAILURE() << name << ": rendered " << out << "\nbut jinja2 raised " << c["error_type"] << ": "
                      << expected;
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
            << name << ": got \"" << e.what() << "\", jinja2 said \"" << expected << "\"";
        EXPECT_EQ(std::string(e.what()).rfind(name + ":", 0), 0u) << "errors start with the template's origin";
    }
}

std::vector<size_t> case_indices() {
    std::vector<size_t> indices(load_references()["cases"].size());
    for (size_t i = 0; i < indices.size(); ++i) indices[i] = i;
    return indices;
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
    std::string name = load_references()["cases"][info.param]["name"];
    for (char& ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    return name;
}

INSTANTIATE_TEST_SUITE_P(Jinja2, ReferenceCase, ::testing::ValuesIn(case_indices()), case_name);

TEST(References, CoverEveryTemplateAndBothOutcomes) {
    std::set<std::string> templates;
    size_t errors = 0;
    for (const auto& c : load_references()["cases"]) {
        if (c.contains("template")) templates.insert(c["template"].get<std::string>());
        errors += c.contains("error");
    }
    EXPECT_EQ(templates, (std::set<std::string>{"llama-2-7b-chat", "llama-3.1-8b-instruct", "llama-3.2-1b-instruct",
                                                "mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3",
                                                "qwen2.5-7b-instruct", "smollm2-135m-instruct"}));
    EXPECT_GT(errors, 20u);
    EXPECT_EQ(load_references()["jinja2_version"], "3.1.6");
}

TEST(ChatTemplateClock, DefaultsToTheLocalWallClock) {
    const ChatTemplate t("{{ strftime_now('%Y') }}", "clock");
    const auto year = [] {
        const std::time_t now = std::time(nullptr);
        std::tm local{};
        localtime_r(&now, &local);
        return std::to_string(local.tm_year + 1900);
    };
    const std::string before = year();
    const std::string rendered = t.render(ordered_json::object());
    EXPECT_TRUE(rendered == before || rendered == year()) << rendered;  // a new year may begin in between
}

TEST(ChatTemplateContext, OrderedJsonKeepsKeyOrderAndPlainJsonSortsIt) {
    const ChatTemplate t("{{ tool | tojson }}", "order");
    const auto ordered = ordered_json::parse(R"({"tool": {"name": "f", "description": "d"}})");
    EXPECT_EQ(t.render(ordered), R"({"name": "f", "description": "d"})");
    EXPECT_EQ(t.render(nlohmann::json::parse(ordered.dump())), R"({"description": "d", "name": "f"})");
}

TEST(ChatTemplateContext, MustBeAnObject) {
    const ChatTemplate t("x", "ctx");
    EXPECT_THROW(t.render(ordered_json::array()), InputError);
    ordered_json too_big;
    too_big["n"] = 18446744073709551615ULL;  // past int64, where Python's int would still go on
    EXPECT_THROW(t.render(too_big), InputError);
}

TEST(ChatTemplateMove, MovedTemplateStillRenders) {
    ChatTemplate a("{{ x }}", "move");
    ChatTemplate b = std::move(a);
    EXPECT_EQ(b.render(ordered_json{{"x", 1}}), "1");
}

}  // namespace
}  // namespace tps
