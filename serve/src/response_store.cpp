// The Responses API's store (response_store.h).
#include "tpserve/serve/response_store.h"

namespace tps::serve {

bool ResponseStore::put(const std::string& id, Entry entry) {
    // (what it holds, as the JSON text it would be answered with)
    const size_t size = id.size() + entry.response.dump().size() + entry.history.dump().size();
    std::lock_guard lock(mu_);
    if (const auto it = index_.find(id); it != index_.end()) {
        bytes_ -= it->second->bytes;
        lru_.erase(it->second);
        index_.erase(it);
    }
    if (size > max_bytes_) return false;
    while (bytes_ + size > max_bytes_ && !lru_.empty()) {
        bytes_ -= lru_.front().bytes;
        index_.erase(lru_.front().id);
        lru_.pop_front();
    }
    lru_.push_back({id, std::move(entry), size});
    index_[id] = std::prev(lru_.end());
    bytes_ += size;
    return true;
}

std::optional<ResponseStore::Entry> ResponseStore::get(const std::string& id) {
    std::lock_guard lock(mu_);
    const auto it = index_.find(id);
    if (it == index_.end()) return std::nullopt;
    lru_.splice(lru_.end(), lru_, it->second);
    return it->second->entry;
}

bool ResponseStore::erase(const std::string& id) {
    std::lock_guard lock(mu_);
    const auto it = index_.find(id);
    if (it == index_.end()) return false;
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
    return true;
}

size_t ResponseStore::bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
}

size_t ResponseStore::size() const {
    std::lock_guard lock(mu_);
    return lru_.size();
}

}  // namespace tps::serve
