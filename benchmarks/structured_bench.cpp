// Structured output's cost per token: the allowed-token mask of a grammar state over a real
// vocabulary, computed afresh (cache cold) and looked up again (cache warm), along the text of a
// JSON object that fits the schema. Figures for docs/perf.md.
//
// usage: structured_bench MODEL [SCHEMA_JSON]
//   MODEL: a GGUF file or an HF model directory (only its tokenizer is read)
#include "tpserve/engine/model_files.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/grammar_constraint.h"

#include <chrono>
#include <cstdio>
#include <exception>

using namespace tps;
using namespace tps::structured;

namespace {

const char* kSchema = R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
    "city": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "city"]})";
const char* kText = R"({"name": "Alexandra Smith", "age": 25, "city": "New York", "tags": ["writer", "editor"]})";

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: structured_bench MODEL [SCHEMA_JSON]\n");
        return 2;
    }
    try {
        const ModelFiles files = ModelFiles::open(argv[1]);
        auto t0 = std::chrono::steady_clock::now();
        auto vocab = std::make_shared<const TokenBytes>(*files.tokenizer);
        std::printf("vocabulary: %d tokens, %zu spelled by bytes; TokenBytes built in %.1f ms\n", vocab->vocab_size(),
                    vocab->sorted().size(), ms_since(t0));
        t0 = std::chrono::steady_clock::now();
        const auto grammar = json_schema_grammar(argc == 3 ? argv[2] : kSchema);
        std::printf("schema compiled in %.2f ms (%zu grammar elements)\n", ms_since(t0), grammar->size());

        // each byte of the text is one step's state (a token per byte: the most states a text has)
        GrammarState state(grammar);
        double cold = 0, warm = 0, worst = 0;
        int steps = 0, masks_allowed = 0;
        GrammarTokens cold_tokens(grammar, vocab, files.stop_ids);
        for (const char* p = kText;; ++p) {
            GrammarTokens fresh(grammar, vocab, files.stop_ids);  // nothing cached
            t0 = std::chrono::steady_clock::now();
            const auto mask = fresh.allowed(state, p == kText);
            const double c = ms_since(t0);
            (void)cold_tokens.allowed(state, p == kText);
            t0 = std::chrono::steady_clock::now();
            (void)cold_tokens.allowed(state, p == kText);
            warm += ms_since(t0);
            cold += c;
            worst = std::max(worst, c);
            for (const uint64_t w : *mask) masks_allowed += __builtin_popcountll(w);
            ++steps;
            if (*p == '\0') break;
            if (!state.advance(std::string_view(p, 1))) {
                std::fprintf(stderr, "the sample text does not fit the schema at byte %td\n", p - kText);
                return 1;
            }
        }
        std::printf("%d states along %zu bytes: mask cold %.2f ms mean, %.2f ms worst; warm (cached) %.4f ms mean; "
                    "%.0f tokens allowed on average\n",
                    steps, std::char_traits<char>::length(kText), cold / steps, worst, warm / steps,
                    static_cast<double>(masks_allowed) / steps);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "structured_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
