// Post-processors: TemplateProcessing (the special tokens around a single sequence, e.g. Llama's
// "<s> $A"), ByteLevel (offsets only, so no change to ids), and a Sequence of them.
#pragma once

#include "components.h"

#include <memory>
#include <vector>

namespace tps::tok {

// One element of a single-sequence template: the input ($A) or the ids of a special token.
struct TemplateItem {
    bool is_sequence = false;
    std::vector<int32_t> ids;
};

std::unique_ptr<PostProcessor> make_template_post_processor(std::vector<TemplateItem> single);
std::unique_ptr<PostProcessor> make_identity_post_processor();
std::unique_ptr<PostProcessor> make_sequence_post_processor(std::vector<std::unique_ptr<PostProcessor>> parts);

}  // namespace tps::tok
