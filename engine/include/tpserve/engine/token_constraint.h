// A rule on which tokens may come next, followed token by token: the seam between the sampler and
// structured output (engine/include/tpserve/engine/structured/). The sampler asks allowed() before
// each draw, gives every other token -inf, and accept()s the token drawn; a sequence whose
// constraint is finished() ends there, as at a stop token.
#pragma once

#include "tpserve/common/error.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace tps {

// A constraint cannot go on with its sequence (no token can continue the text, or a token came
// that it does not allow): that sequence fails, the others go on.
class ConstraintError : public Error {
public:
    using Error::Error;
};

class TokenConstraint {
public:
    virtual ~TokenConstraint() = default;
    // The same rule for another sequence, before any token.
    virtual std::unique_ptr<TokenConstraint> restart() const = 0;
    // The tokens that may come next: token t when bit t % 64 of word t / 64 is set. Ids past the
    // mask may not come. ConstraintError when no token may come though the text is not finished
    // (the vocabulary cannot spell what the rule needs next).
    virtual const std::vector<uint64_t>& allowed() = 0;
    // Records the token chosen; ConstraintError when it was not allowed.
    virtual void accept(int32_t token) = 0;
    // The text is complete and nothing may follow: the sequence ends.
    virtual bool finished() const = 0;
};

inline bool mask_has(const std::vector<uint64_t>& mask, int64_t token) {
    const auto word = static_cast<size_t>(token >> 6);
    return token >= 0 && word < mask.size() && ((mask[word] >> (token & 63)) & 1);
}

}  // namespace tps
