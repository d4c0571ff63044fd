// gtest under mpirun: every rank runs every test. After each test the ranks compare outcomes;
// when any rank failed, the job ends at once with the test's name (MPI_Abort), so one failure
// never turns into the others waiting. Ranks other than 0 print only failures.
#include "mpi_test_env.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace tps::testing {
namespace {

std::unique_ptr<MpiWorld> g_world;
double g_deadline = 30;

class AgreeAfterEachTest : public ::testing::EmptyTestEventListener {
public:
    explicit AgreeAfterEachTest(Communicator& world) : world_(world) {}
    void OnTestEnd(const ::testing::TestInfo& info) override {
        int failed = info.result()->Failed() ? 1 : 0;
        int any = 0;
        try {
            std::vector<int> all(static_cast<size_t>(world_.size()));
            world_.all_gather(&failed, all.data(), sizeof(int), "the outcome of a test");
            for (int f : all) any |= f;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "rank %d: after %s.%s: %s\n", g_world->rank(), info.test_suite_name(), info.name(), e.what());
            any = 1;
        }
        if (any) {
            std::fprintf(stderr, "rank %d: %s.%s failed on some rank; ending the job\n", g_world->rank(),
                         info.test_suite_name(), info.name());
            MpiWorld::abort(1);
        }
    }

private:
    Communicator& world_;
};

}  // namespace

MpiWorld& mpi() { return *g_world; }
double test_deadline() { return g_deadline; }

}  // namespace tps::testing

int main(int argc, char** argv) {
    using namespace tps::testing;
    g_world = std::make_unique<tps::MpiWorld>(&argc, &argv);
    if (const char* d = std::getenv("TPS_TEST_DEADLINE")) g_deadline = std::atof(d);
    g_world->set_deadline(g_deadline);
    ::testing::InitGoogleTest(&argc, argv);
    if (g_world->rank() != 0) ::testing::GTEST_FLAG(brief) = true;
    auto world = g_world->world("the test world");
    ::testing::UnitTest::GetInstance()->listeners().Append(new AgreeAfterEachTest(*world));
    const int rc = RUN_ALL_TESTS();
    world.reset();
    g_world.reset();
    return rc;
}
