// vLLM's allowed_token_ids and bad_words as a TokenConstraint (token_constraint.h), and two
// constraints followed at once (a filter beside an output format).
#pragma once

#include "tpserve/engine/token_constraint.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace tps::serve {

// Only `allowed` may come (all tokens below `vocab` when empty), and never the last token of a
// bad sequence right after the output's tokens end with the rest of it (vLLM's bad_words: a
// one-token sequence is never drawn). ConstraintError when no token is left.
std::unique_ptr<TokenConstraint> make_token_filter(int64_t vocab, const std::vector<int32_t>& allowed,
                                                   std::vector<std::vector<int32_t>> bad);

// A token may come when both allow it; the output ends when either is finished.
std::unique_ptr<TokenConstraint> make_both(std::unique_ptr<TokenConstraint> a, std::unique_ptr<TokenConstraint> b);

}  // namespace tps::serve
