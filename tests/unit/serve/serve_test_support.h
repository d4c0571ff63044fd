// What the serve tests share: the smollm2 fixture opened once, and a ServedModel over it.
#pragma once

#include "tpserve/engine/model_files.h"
#include "tpserve/serve/request.h"

#include <filesystem>

namespace tps::serve::test {

inline const ModelFiles& fixture() {
    static const ModelFiles files = ModelFiles::open(std::filesystem::path(TPS_SOURCE_DIR) / "tests/fixtures/models/smollm2");
    return files;
}

inline ServedModel served(int64_t context = 256) {
    const ModelFiles& f = fixture();
    ServedModel m;
    m.name = "smollm2";
    m.tokenizer = f.tokenizer.get();
    m.chat_template = f.chat_template ? &*f.chat_template : nullptr;
    m.bos_token = f.bos_token;
    m.eos_token = f.eos_token;
    m.stop_ids = f.stop_ids;
    m.context = context;
    m.created = 1700000000;
    static const auto bytes = std::make_shared<const structured::TokenBytes>(*f.tokenizer);
    m.token_bytes = bytes;
    return m;
}

}  // namespace tps::serve::test
