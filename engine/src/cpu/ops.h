// Row-level ops of the CPU backend (ops.cpp) and the RoPE table builder shared by backends.
#pragma once

#include "tpserve/engine/backend.h"
#include "tpserve/partition/model.h"

#include <cstdint>

namespace tps::cpu {

void rmsnorm_row(const float* x, const float* w, int64_t n, float eps, float* out);
// cos_buf / sin_buf: rotary_dims / 2 floats of scratch
void rope_row(float* x, int64_t heads, int64_t head_dim, const RopeTable& t, int32_t pos, float* cos_buf,
              float* sin_buf);
void swiglu_row(const float* gate, const float* up, int64_t n, float* out);
// one query head against its sequence's cached keys/values at positions [0, last_pos]; scores:
// block_tokens floats of scratch
void attention_one(const float* q, const void* k_layer, const void* v_layer, const KvLayout& L,
                   const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores);
// The same with AVX2 (attention_avx2.cpp); false when this CPU or head size cannot take it.
bool attention_avx2(const float* q, const void* k_layer, const void* v_layer, const KvLayout& L,
                    const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores);
// The scalar reference, always available (tests compare the two).
void attention_reference(const float* q, const void* k_layer, const void* v_layer, const KvLayout& L,
                         const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores);

}  // namespace tps::cpu

namespace tps {
// The inverse frequencies for a model's RoPE configuration (none, linear, llama3; GGUF files
// give llama3's factors as a tensor). tps::InputError for a scaling the engine does not do.
RopeTable make_rope_table(const RopeConfig& rope, int64_t head_dim, const Vec* freq_factors);
}  // namespace tps
