// MpiCommunicator and the control channel under mpirun (2, 3 and 4 ranks): sums of small
// integers are exact, so results are compared bit for bit; messages arrive whole and in order;
// a silent peer is named at the deadline, and a live one that merely never sends is told apart.
#include "mpi_test_env.h"

#include "tpserve/common/error.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <span>
#include <thread>

namespace tps {
namespace {

using testing::mpi;

template <class T>
void expect_exact_sum(DType type, int64_t count) {
    auto world = mpi().world();
    const int n = world->size();
    const int r = world->rank();
    std::vector<T> data(count), want(count);
    for (int64_t i = 0; i < count; ++i) {
        data[static_cast<size_t>(i)] = static_cast<T>((r + 1) * (i % 7) - 3);
        want[static_cast<size_t>(i)] = static_cast<T>(n * (n + 1) / 2 * (i % 7) - 3 * n);
    }
    world->all_reduce_sum(data.data(), count, type, "exact sums");
    EXPECT_EQ(std::memcmp(data.data(), want.data(), data.size() * sizeof(T)), 0) << dtype_name(type);
    EXPECT_EQ(world->stats().calls[static_cast<size_t>(CommOp::all_reduce)], 1);
}

// (counts that are not a multiple of anything: below 1 MiB MPI's all-reduce, above it our ring,
// whose 1 MiB segments then fit one chunk but not its neighbour, one element longer)
TEST(MpiComm, AllReduceOfSmallIntegersIsBitExact) {
    const int64_t straddle = mpi().size() * int64_t{262144} + 1;
    for (int64_t count : {int64_t{1}, int64_t{100003}, int64_t{1000003}, straddle}) {
        expect_exact_sum<float>(DType::f32, count);
        expect_exact_sum<double>(DType::f64, count);
        expect_exact_sum<int32_t>(DType::i32, count);
        expect_exact_sum<int64_t>(DType::i64, count);
    }
}

// A large all-reduce (the ring) of floats whose sum rounds: every rank ends with the same bits,
// within rounding of the exact sum, and the calls around it on the same communicator (a small
// all-reduce, a send round the ring) are not mixed up with its messages.
TEST(MpiComm, ALargeAllReduceLeavesEveryRankTheSameBits) {
    auto world = mpi().world();
    const int n = world->size();
    const int r = world->rank();
    const int64_t count = 300007;  // 1.2 MB of f32
    auto value = [](int q, int64_t i) { return std::sin(static_cast<double>(i) * 0.37 + q) * (1.0 + q * 1e-3) / 3.0; };
    std::vector<float> data(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) data[static_cast<size_t>(i)] = static_cast<float>(value(r, i));
    float small = static_cast<float>(r);
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    world->post_message(std::vector<uint8_t>(3, static_cast<uint8_t>(r)), next, "before the sum");
    world->all_reduce_sum(&small, 1, DType::f32, "a small sum");
    world->all_reduce_sum(data.data(), count, DType::f32, "a large sum");
    EXPECT_EQ(world->receive_message(prev, "before the sum"), std::vector<uint8_t>(3, static_cast<uint8_t>(prev)));
    world->flush_posted("before the sum");
    EXPECT_EQ(small, static_cast<float>(n * (n - 1) / 2));
    for (int64_t i = 0; i < count; i += 997) {
        double want = 0;
        for (int q = 0; q < n; ++q) want += static_cast<float>(value(q, i));
        ASSERT_NEAR(data[static_cast<size_t>(i)], want, 4e-7 * n) << "element " << i;
    }
    uint64_t hash = 1469598103934665603ull;  // FNV-1a of the result's bytes
    for (const std::byte b : std::as_bytes(std::span(data))) hash = (hash ^ static_cast<uint8_t>(b)) * 1099511628211ull;
    std::vector<uint64_t> all(static_cast<size_t>(n));
    world->all_gather(&hash, all.data(), sizeof hash, "the results' hashes");
    for (int q = 0; q < n; ++q) EXPECT_EQ(all[static_cast<size_t>(q)], hash) << "rank " << q << " ended with other bits";
}

TEST(MpiComm, AllReduceRefusesTypesMpiCannotSum) {
    auto world = mpi().world();
    uint16_t x = 0;
    EXPECT_THROW(world->all_reduce_sum(&x, 1, DType::bf16, "bf16"), UsageError);
}

TEST(MpiComm, AllGatherIsInRankOrder) {
    auto world = mpi().world();
    const int n = world->size();
    std::array<int32_t, 3> mine{world->rank(), world->rank() * 10, -world->rank()};
    std::vector<int32_t> all(static_cast<size_t>(3 * n));
    world->all_gather(mine.data(), all.data(), sizeof mine, "gather");
    for (int r = 0; r < n; ++r) {
        EXPECT_EQ(all[static_cast<size_t>(3 * r)], r);
        EXPECT_EQ(all[static_cast<size_t>(3 * r + 1)], 10 * r);
        EXPECT_EQ(all[static_cast<size_t>(3 * r + 2)], -r);
    }
}

TEST(MpiComm, BroadcastFromEveryRoot) {
    auto world = mpi().world();
    for (int root = 0; root < world->size(); ++root) {
        std::vector<uint8_t> data(70000, world->rank() == root ? static_cast<uint8_t>(root + 1) : 0);
        world->broadcast(data.data(), static_cast<int64_t>(data.size()), root, "broadcast");
        EXPECT_EQ(std::count(data.begin(), data.end(), static_cast<uint8_t>(root + 1)), 70000) << "root " << root;
    }
}

TEST(MpiComm, SendAndReceiveAroundARing) {
    auto world = mpi().world();
    const int n = world->size();
    const int r = world->rank();
    std::vector<float> out(50000), in(50000);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(r * 1000 + static_cast<int>(i % 1000));
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    const auto bytes = static_cast<int64_t>(out.size() * sizeof(float));
    if (r % 2 == 0) {
        world->send(out.data(), bytes, next, "ring");
        world->recv(in.data(), bytes, prev, "ring");
    } else {
        world->recv(in.data(), bytes, prev, "ring");
        world->send(out.data(), bytes, next, "ring");
    }
    for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(in[i], static_cast<float>(prev * 1000 + static_cast<int>(i % 1000)));
}

TEST(MpiComm, AReceiveOfTheWrongSizeIsAnError) {
    auto world = mpi().world();
    if (world->rank() == 0) {
        const int64_t eight = 8;
        world->send(&eight, sizeof eight, 1, "short message");
    } else if (world->rank() == 1) {
        std::array<int64_t, 2> two{};
        try {
            world->recv(two.data(), sizeof two, 0, "short message");
            ADD_FAILURE() << "a short message was accepted";
        } catch (const CommError& e) {
            EXPECT_NE(std::string(e.what()).find("expected 16 bytes, received 8"), std::string::npos) << e.what();
        }
    }
}

TEST(MpiComm, PostedMessagesCrossWithoutWaitingForEachOther) {
    auto world = mpi().world();
    const int n = world->size();
    const int r = world->rank();
    // everyone posts a large message to everyone, then receives: blocking sends would deadlock
    for (int p = 0; p < n; ++p) {
        if (p == r) continue;
        std::vector<uint8_t> m(3 << 20, static_cast<uint8_t>(r));
        m[0] = static_cast<uint8_t>(p);
        world->post_message(std::move(m), p, "crossing");
    }
    for (int p = 0; p < n; ++p) {
        if (p == r) continue;
        const auto m = world->receive_message(p, "crossing");
        ASSERT_EQ(m.size(), size_t{3} << 20);
        EXPECT_EQ(m[0], r);
        EXPECT_EQ(m[1], p);
    }
    world->flush_posted("crossing");
}

TEST(MpiComm, SplitMakesGroupsWithTheirOwnRanks) {
    const int r = mpi().rank();
    auto group = mpi().split(r % 2, r, fmt::format("parity {}", r % 2));
    ASSERT_NE(group, nullptr);
    const int n = mpi().size();
    EXPECT_EQ(group->size(), (n + 1 - r % 2) / 2);
    EXPECT_EQ(group->world_rank(group->rank()), r);
    int32_t v = r;
    group->all_reduce_sum(&v, 1, DType::i32, "parity sum");
    int32_t want = 0;
    for (int q = r % 2; q < n; q += 2) want += q;
    EXPECT_EQ(v, want);
    EXPECT_NE(group->name().find("parity"), std::string::npos);
    // a rank that joins no group gets none, and the others still form theirs
    auto some = mpi().split(r == 0 ? -1 : 7, r, "all but rank 0");
    EXPECT_EQ(some == nullptr, r == 0);
    if (some) {
        EXPECT_EQ(some->size(), n - 1);
    }
}

TEST(MpiComm, ControlChannelDeliversEveryMessageInOrder) {
    auto control = mpi().control();
    const int r = mpi().rank();
    constexpr int kMessages = 60;
    if (r == 0) {
        for (int i = 0; i < kMessages; ++i) {
            std::vector<uint8_t> m(static_cast<size_t>(1 + (i % 5) * 200000), static_cast<uint8_t>(i));
            control->post(std::move(m));  // returns at once, whatever the others are doing
        }
        control->flush();
    } else {
        for (int i = 0; i < kMessages; ++i) {
            const auto m = control->receive();
            ASSERT_EQ(m.size(), static_cast<size_t>(1 + (i % 5) * 200000));
            ASSERT_EQ(m.front(), static_cast<uint8_t>(i));
            ASSERT_EQ(m.back(), static_cast<uint8_t>(i));
        }
    }
}

TEST(MpiComm, KeepAlivesCarryAnIdleRankZeroPastTheDeadline) {
    auto control = mpi().control();
    const testing::ScopedDeadline short_deadline(1.0);
    if (mpi().rank() == 0) {
        // idle for 2.5 deadlines, ticking as a server's engine loop does
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
        while (std::chrono::steady_clock::now() < until) {
            control->tick();
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        control->post({1, 2, 3});
        control->flush();
    } else {
        EXPECT_EQ(control->receive(), (std::vector<uint8_t>{1, 2, 3}));
    }
}

TEST(MpiComm, ASilentPeerIsNamedAtTheDeadline) {
    auto world = mpi().world();
    const int r = world->rank();
    const int last = world->size() - 1;
    if (r == last) {
        // stopped: no MPI calls at all, so it cannot answer the liveness ping
        std::this_thread::sleep_for(std::chrono::milliseconds(6000));
        world->post_message({42}, 0, "late");
    } else if (r == 0) {
        {
            const testing::ScopedDeadline short_deadline(1.0);
            const auto start = std::chrono::steady_clock::now();
            try {
                world->receive_message(last, "the answer");
                ADD_FAILURE() << "no timeout";
            } catch (const CommError& e) {
                const std::string m = e.what();
                EXPECT_NE(m.find("rank 0: receive from rank " + std::to_string(last) + " (the answer)"), std::string::npos) << m;
                EXPECT_NE(m.find("did not complete within 1 s"), std::string::npos) << m;
                const auto at = m.find("not answering: rank " + std::to_string(last) + " (host ");
                EXPECT_NE(at, std::string::npos) << m;
                if (at != std::string::npos) {
                    EXPECT_EQ(m.find(", rank", at), std::string::npos) << "only the silent one: " << m;
                }
            }
            const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            EXPECT_LT(took, 5.5);  // the deadline and the two-second ping, not the peer's six-second sleep
        }
        EXPECT_EQ(world->receive_message(last, "the late answer"), std::vector<uint8_t>{42});
    }
    // ranks in between wait here, answering pings
    world->barrier("after the silent peer");
}

// The ring's steps wait with the deadline like every call: a rank that never joins a large
// all-reduce is named by every other rank, each within the deadline and the ping. (On a group of
// its own: the ring's messages still in flight are left there.)
TEST(MpiComm, ARankMissingFromALargeAllReduceIsNamedAtTheDeadline) {
    const int r = mpi().rank();
    const int last = mpi().size() - 1;
    auto group = mpi().split(0, r, "large sums");
    std::vector<float> data(1 << 20, 1.0f);  // 4 MB: the ring, in 1 MiB segments
    if (r == last) {
        std::this_thread::sleep_for(std::chrono::milliseconds(7000));  // no MPI calls: no answer to the ping
    } else {
        const testing::ScopedDeadline short_deadline(1.0);
        const auto start = std::chrono::steady_clock::now();
        try {
            group->all_reduce_sum(data.data(), static_cast<int64_t>(data.size()), DType::f32, "a sum the last rank misses");
            ADD_FAILURE() << "no timeout";
        } catch (const CommError& e) {
            const std::string m = e.what();
            EXPECT_NE(m.find(fmt::format("rank {}: all-reduce (a sum the last rank misses) in large sums", r)), std::string::npos) << m;
            EXPECT_NE(m.find("did not complete within 1 s"), std::string::npos) << m;
            EXPECT_NE(m.find(fmt::format("not answering: rank {} (host ", last)), std::string::npos) << m;
        }
        const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_LT(took, 6.0);  // the deadline and the two-second ping, not the missing rank's sleep
    }
    mpi().world()->barrier("after the missing rank");
}

TEST(MpiComm, ALivePeerThatNeverSendsIsToldApartFromADeadOne) {
    auto world = mpi().world();
    const int r = world->rank();
    if (r == 0) {
        {
            const testing::ScopedDeadline short_deadline(1.0);
            try {
                world->receive_message(1, "a message rank 1 never sends");
                ADD_FAILURE() << "no timeout";
            } catch (const CommError& e) {
                EXPECT_NE(std::string(e.what()).find("every other rank answers"), std::string::npos) << e.what();
            }
        }
        world->post_message({1}, 1, "release");
    } else if (r == 1) {
        EXPECT_EQ(world->receive_message(0, "release"), std::vector<uint8_t>{1});
    }
    world->flush_posted("release");
    world->barrier("after the live peer");
}

}  // namespace
}  // namespace tps
