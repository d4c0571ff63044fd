// Structured output's cost per token: the allowed-token mask of a grammar state over a real
// vocabulary, computed afresh (cache cold) and looked up again (cache warm), along the text of a
// JSON object that fits the schema. Figures for docs/perf.md.
//
// usage: structured_bench MODEL [SCHEMA_JSON | --structural-tag]
//   MODEL: a GGUF file or an HF model directory (only its tokenizer is read)
//   --structural-tag: free text with the object as a Qwen-style tool call between tags
//   (triggered_tags): the free text's states allow nearly every token, the costliest masks.
#include "tpserve/engine/model_files.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/grammar_constraint.h"
#include "tpserve/engine/structured/structural_tag.h"

#include <chrono>
#include <cstdio>
#include <exception>

using namespace tps;
using namespace tps::structured;

namespace {

const char* kSchema = R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
    "city": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "city"]})";
const char* kText = R"({"name": "Alexandra Smith", "age": 25, "city": "New York", "tags": ["writer", "editor"]})";

std::string structural_tag() {
    return std::string(R"({"type": "structural_tag", "format": {"type": "triggered_tags", "triggers": ["<tool_call>"],
        "tags": [{"begin": "<tool_call>", "content": {"type": "json_schema", "json_schema": )") +
           kSchema + R"(}, "end": "</tool_call>"}]}})";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: structured_bench MODEL [SCHEMA_JSON | --structural-tag]\n");
        return 2;
    }
    const bool tagged = argc == 3 && std::string_view(argv[2]) == "--structural-tag";
    const std::string text = tagged ? std::string("I will look it up for you, one moment. <tool_call>") + kText + "</tool_call> Done."
                                    : std::string(kText);
    try {
        const ModelFiles files = ModelFiles::open(argv[1]);
        auto t0 = std::chrono::steady_clock::now();
        auto vocab = std::make_shared<const TokenBytes>(*files.tokenizer);
        std::printf("vocabulary: %d tokens, %zu spelled by bytes; TokenBytes built in %.1f ms\n", vocab->vocab_size(),
                    vocab->sorted().size(), ms_since(t0));
        t0 = std::chrono::steady_clock::now();
        const auto grammar = tagged ? structural_tag_grammar(structural_tag()) : json_schema_grammar(argc == 3 ? argv[2] : kSchema);
        std::printf("%s compiled in %.2f ms (%zu grammar elements)\n", tagged ? "structural tag" : "schema", ms_since(t0),
                    grammar->size());

        // each byte of the text is one step's state (a token per byte: the most states a text has)
        GrammarState state(grammar);
        double cold = 0, warm = 0, worst = 0;
        int steps = 0, masks_allowed = 0;
        GrammarTokens cold_tokens(grammar, vocab, files.stop_ids);
        const char* const start = text.c_str();
        for (const char* p = start;; ++p) {
            GrammarTokens fresh(grammar, vocab, files.stop_ids);  // nothing cached
            t0 = std::chrono::steady_clock::now();
            const auto mask = fresh.allowed(state, p == start);
            const double c = ms_since(t0);
            (void)cold_tokens.allowed(state, p == start);
            t0 = std::chrono::steady_clock::now();
            (void)cold_tokens.allowed(state, p == start);
            warm += ms_since(t0);
            cold += c;
            worst = std::max(worst, c);
            for (const uint64_t w : *mask) masks_allowed += __builtin_popcountll(w);
            ++steps;
            if (*p == '\0') break;
            if (!state.advance(std::string_view(p, 1))) {
                std::fprintf(stderr, "the sample text does not fit the grammar at byte %td\n", p - start);
                return 1;
            }
        }
        std::printf("%d states along %zu bytes: mask cold %.2f ms mean, %.2f ms worst; warm (cached) %.4f ms mean; "
                    "%.0f tokens allowed on average\n",
                    steps, text.size(), cold / steps, worst, warm / steps,
                    static_cast<double>(masks_allowed) / steps);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "structured_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
