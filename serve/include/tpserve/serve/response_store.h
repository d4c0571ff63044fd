// The Responses API's store (POST /v1/responses with `store`, the default): finished responses
// kept in memory on rank 0, for GET /v1/responses/{id}, DELETE, and a later request's
// previous_response_id, which continues the conversation the stored one ended. Bounded in bytes
// (--responses-store-mib): the least recently used go first. Thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace tps::serve {

class ResponseStore {
public:
    struct Entry {
        nlohmann::ordered_json response;  // the response object, as it was answered
        nlohmann::ordered_json history;   // the conversation: every input item, then the output items
        size_t own_input = 0;             // where this response's own input items start in history
    };

    explicit ResponseStore(size_t max_bytes) : max_bytes_(max_bytes) {}

    size_t max_bytes() const noexcept { return max_bytes_; }
    bool enabled() const noexcept { return max_bytes_ > 0; }
    // Keeps `entry` under `id`, evicting the least recently used to make room; an entry larger
    // than the whole store is not kept (false).
    bool put(const std::string& id, Entry entry);
    // The entry (now the most recently used), or nullopt.
    std::optional<Entry> get(const std::string& id);
    bool erase(const std::string& id);
    size_t bytes() const;
    size_t size() const;

private:
    struct Kept {
        std::string id;
        Entry entry;
        size_t bytes;
    };
    const size_t max_bytes_;
    mutable std::mutex mu_;
    std::list<Kept> lru_;  // least recently used first
    std::unordered_map<std::string, std::list<Kept>::iterator> index_;
    size_t bytes_ = 0;
};

}  // namespace tps::serve
