// Only single sequences are encoded by the engine, so a template's "pair" form is not kept.
#include "post_processors.h"

namespace tps::tok {
namespace {

class Template final : public PostProcessor {
public:
    explicit Template(std::vector<TemplateItem> single) : single_(std::move(single)) {}
    void process(std::vector<int32_t>& ids, bool add_special) const override {
        if (!add_special) return;
        std::vector<int32_t> out;
        out.reserve(ids.size() + 4);
        for (const TemplateItem& item : single_) {
            if (item.is_sequence) {
                out.insert(out.end(), ids.begin(), ids.end());
            } else {
                out.insert(out.end(), item.ids.begin(), item.ids.end());
            }
        }
        ids = std::move(out);
    }
    std::optional<int32_t> leading_special() const override {
        if (single_.empty() || single_[0].is_sequence || single_[0].ids.empty()) return std::nullopt;
        return single_[0].ids[0];
    }

private:
    std::vector<TemplateItem> single_;
};

class Identity final : public PostProcessor {
public:
    void process(std::vector<int32_t>&, bool) const override {}
};

class Sequence final : public PostProcessor {
public:
    explicit Sequence(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
    void process(std::vector<int32_t>& ids, bool add_special) const override {
        for (const auto& p : parts_) p->process(ids, add_special);
    }
    std::optional<int32_t> leading_special() const override {
        std::optional<int32_t> lead;
        for (const auto& p : parts_) {
            if (const auto l = p->leading_special()) lead = l;  // the last one added ends up first
        }
        return lead;
    }

private:
    std::vector<std::unique_ptr<PostProcessor>> parts_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_template_post_processor(std::vector<TemplateItem> single) {
    return std::make_unique<Template>(std::move(single));
}
std::unique_ptr<PostProcessor> make_identity_post_processor() { return std::make_unique<Identity>(); }
std::unique_ptr<PostProcessor> make_sequence_post_processor(std::vector<std::unique_ptr<PostProcessor>> parts) {
    return std::make_unique<Sequence>(std::move(parts));
}

}  // namespace tps::tok
