// The normalizers of the supported tokenizer.json files: NFC (Qwen2), NFD, Prepend and Replace
// (Llama 2 / Mistral's "▁" handling), Strip, and a Sequence of them.
#pragma once

#include "components.h"
#include "regex.h"

#include <memory>
#include <string>
#include <vector>

namespace tps::tok {

std::unique_ptr<Normalizer> make_nfc_normalizer();
std::unique_ptr<Normalizer> make_nfd_normalizer();
// Prepends `prefix` to non-empty text.
std::unique_ptr<Normalizer> make_prepend_normalizer(std::string prefix);
// Replaces every match of `pattern` with `content`.
std::unique_ptr<Normalizer> make_replace_normalizer(Regex pattern, std::string content);
// Removes White_Space at the left and/or right end.
std::unique_ptr<Normalizer> make_strip_normalizer(bool left, bool right);
std::unique_ptr<Normalizer> make_sequence_normalizer(std::vector<std::unique_ptr<Normalizer>> parts);

}  // namespace tps::tok
