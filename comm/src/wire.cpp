#include "tpserve/comm/wire.h"

#include <algorithm>

namespace tps {

void ByteWriter::append(const void* data, size_t n) {
    if (size_ + n > bytes_.size()) bytes_.resize(std::max(2 * bytes_.size(), size_ + n + 64));
    if (n > 0) std::memcpy(bytes_.data() + size_, data, n);
    size_ += n;
}

std::vector<uint8_t> ByteWriter::take() {
    bytes_.resize(size_);
    size_ = 0;
    return std::move(bytes_);
}

}  // namespace tps
