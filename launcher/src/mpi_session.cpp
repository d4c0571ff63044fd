#include "mpi_session.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <vector>

namespace tps::cli {
namespace {

std::unique_ptr<MpiWorld> g_world;
bool g_agreed = false;

// The error a rank met, in a fixed-size record every rank can gather.
struct Outcome {
    int32_t failed = 0;
    int32_t kind = 0;  // 1 usage, 2 input, 3 other
    char message[1016] = {};
};

}  // namespace

bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
        if (std::getenv(v) != nullptr) return true;
    }
    return false;
}

MpiWorld& mpi_world() {
    if (!g_world) g_world = std::make_unique<MpiWorld>(nullptr, nullptr);
    return *g_world;
}

MpiWorld* mpi_world_if_started() noexcept { return g_world.get(); }

void finish_mpi() noexcept { g_world.reset(); }

bool error_is_agreed() noexcept { return g_agreed; }

void agree(Communicator& world, std::string_view what, const std::function<void()>& step, double deadline_s) {
    Outcome mine;
    std::exception_ptr error;
    try {
        step();
    } catch (const std::exception& e) {
        error = std::current_exception();
        mine.failed = 1;
        mine.kind = dynamic_cast<const UsageError*>(&e) ? 1 : dynamic_cast<const InputError*>(&e) ? 2 : 3;
        std::strncpy(mine.message, e.what(), sizeof mine.message - 1);
    }
    std::vector<Outcome> all(static_cast<size_t>(world.size()));
    // the slowest rank may take long (loading a shard): wait up to deadline_s for it
    MpiWorld& mpi = mpi_world();
    struct Restore {
        MpiWorld& mpi;
        double usual;
        ~Restore() { mpi.set_deadline(usual); }
    } restore{mpi, mpi.deadline()};
    mpi.set_deadline(std::min(86400.0, std::max(restore.usual, deadline_s)));
    world.all_gather(&mine, all.data(), sizeof(Outcome), what);
    for (int r = 0; r < world.size(); ++r) {
        const Outcome& o = all[static_cast<size_t>(r)];
        if (!o.failed) continue;
        g_agreed = true;
        if (error) std::rethrow_exception(error);
        const std::string msg = fmt::format("rank {} could not {}: {}", world.world_rank(r), what, o.message);
        if (o.kind == 1) throw UsageError(msg);
        if (o.kind == 2) throw InputError(msg);
        throw Error(msg);
    }
}

std::string broadcast_string(Communicator& world, std::string text, std::string_view what) {
    int64_t n = static_cast<int64_t>(text.size());
    world.broadcast(&n, sizeof n, 0, what);
    text.resize(static_cast<size_t>(n));
    if (n > 0) world.broadcast(text.data(), n, 0, what);
    return text;
}

}  // namespace tps::cli
