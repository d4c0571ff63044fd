// The chat fields that steer the template (add_generation_prompt, continue_final_message,
// chat_template_kwargs, documents, tools) against transformers' apply_chat_template, which nobody
// here wrote: tests/fixtures/chat_templates/chat_request_references.json holds its renderings
// (make_chat_request_references.py). Each request goes through /tokenize's parser, which renders
// chats as /v1/chat/completions does, and must give the tokens of transformers' text, or a 400
// where transformers raised.
#include "serve_test_support.h"
#include "tpserve/engine/chat_template.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

namespace tps::serve {
namespace {

const std::filesystem::path kFixtures = std::filesystem::path(TPS_SOURCE_DIR) / "tests/fixtures";

const ModelFiles& model_files(const std::string& name) {
    static std::map<std::string, std::unique_ptr<ModelFiles>> opened;
    auto& files = opened[name];
    if (!files) files = std::make_unique<ModelFiles>(ModelFiles::open(kFixtures / "models" / name));
    return *files;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// transformers' error, in our words
std::string our_words(const std::string& theirs) {
    if (theirs.find("are not compatible") != std::string::npos) return "cannot both be true";
    if (theirs.find("does not appear") != std::string::npos) return "does not appear in the chat the template renders";
    return "the chat template refused the messages";
}

TEST(ChatRequest, TemplateFieldsRenderAsTransformersDoes) {
    const auto refs = nlohmann::ordered_json::parse(read_file(kFixtures / "chat_templates/chat_request_references.json"));
    ASSERT_GE(refs["cases"].size(), 30u);
    for (const auto& c : refs["cases"]) {
        const std::string model = c["model"].get<std::string>();
        const ModelFiles& f = model_files(model);
        std::optional<ChatTemplate> own;
        if (c.contains("template")) own.emplace(read_file(kFixtures / "chat_templates" / c["template"].get<std::string>()), "template");
        if (c.contains("inline")) own.emplace(c["inline"].get<std::string>(), "inline");
        ServedModel m;
        m.name = model;
        m.tokenizer = f.tokenizer.get();
        m.chat_template = own ? &*own : &*f.chat_template;
        m.bos_token = f.bos_token;
        m.eos_token = f.eos_token;
        m.context = 4096;
        const std::string body = c["request"].dump();
        SCOPED_TRACE(fmt::format("{} {}: {}", model, c.value("template", c.value("inline", "")), body));
        if (c.contains("error")) {
            try {
                parse_tokenize_request(body, m);
                ADD_FAILURE() << "accepted; transformers raised: " << c["error"];
            } catch (const ApiError& e) {
                EXPECT_EQ(e.status(), 400);
                EXPECT_NE(std::string(e.what()).find(our_words(c["error"])), std::string::npos) << e.what();
            }
            continue;
        }
        const std::string text = c["text"].get<std::string>();
        const std::vector<int32_t> got = parse_tokenize_request(body, m);
        EXPECT_EQ(got, f.tokenizer->encode(text, false)) << "ours:   " << nlohmann::json(f.tokenizer->decode(got, false)).dump()
                                                         << "\ntheirs: " << nlohmann::json(text).dump();
    }
}

TEST(ChatRequest, BadTemplateFieldsNameTheProblem) {
    const ServedModel m = test::served();
    const std::pair<const char*, const char*> cases[] = {
        {R"({"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":[1]})", "'chat_template_kwargs' must be an object"},
        {R"({"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":{"messages":[]}})",
         "'chat_template_kwargs.messages': give 'messages' as a field of the request itself"},
        {R"({"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":{"add_generation_prompt":false}})",
         "'chat_template_kwargs.add_generation_prompt'"},
        {R"({"messages":[{"role":"user","content":"x"}],"documents":{"title":"a"}})", "'documents' must be an array of objects"},
        {R"({"messages":[{"role":"user","content":"x"}],"documents":["a"]})", "'documents' must be an array of objects"},
        {R"({"messages":[{"role":"user","content":"x"}],"add_generation_prompt":"yes"})", "'add_generation_prompt' must be a boolean"},
        {R"({"messages":[{"role":"user","content":"x"}],"continue_final_message":1})", "'continue_final_message' must be a boolean"},
        {R"({"messages":[{"role":"assistant","tool_calls":[]}],"continue_final_message":true})",
         "needs the last message to have text content"},
        {R"({"messages":[{"role":"user","content":"x"}],"reasoning_effort":3})", "'reasoning_effort' must be a string"},
    };
    for (const auto& [body, words] : cases) {
        for (const bool tokenize : {false, true}) {
            try {
                if (tokenize) parse_tokenize_request(body, m);
                else parse_chat_request(body, m);
                ADD_FAILURE() << "accepted: " << body;
            } catch (const ApiError& e) {
                EXPECT_EQ(e.status(), 400) << body;
                EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << body << "\n" << e.what();
            }
        }
    }
}

// OpenAI's reasoning_effort reaches the template as vLLM passes it (gpt-oss's template reads it);
// chat_template_kwargs says it last.
TEST(ChatRequest, ReasoningEffortReachesTheTemplate) {
    ServedModel m = test::served();
    const ChatTemplate effort("{{ messages[0]['content'] }} effort={{ reasoning_effort if reasoning_effort is defined else 'none' }}",
                              "effort.jinja");
    m.chat_template = &effort;
    auto rendered = [&](const std::string& body) { return m.tokenizer->decode(parse_tokenize_request(body, m), false); };
    EXPECT_EQ(rendered(R"({"messages":[{"role":"user","content":"x"}]})"), "x effort=none");
    EXPECT_EQ(rendered(R"({"messages":[{"role":"user","content":"x"}],"reasoning_effort":"low"})"), "x effort=low");
    EXPECT_EQ(rendered(R"({"messages":[{"role":"user","content":"x"}],"reasoning_effort":"low",
                           "chat_template_kwargs":{"reasoning_effort":"high"}})"),
              "x effort=high");
}

}  // namespace
}  // namespace tps::serve
