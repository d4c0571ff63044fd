// NcclCommunicator under mpirun, one GPU per rank: sums of small integers compared bit for bit
// (f32, i32 and bf16), gathers, broadcasts, a ring of sends, a barrier, and the same queued on one
// stream (NcclQueue), where a collective a peer never makes is named at the deadline. Skipped
// cleanly where the build has no NCCL or the machine has fewer GPUs than ranks.
#include "mpi_test_env.h"

#include "tpserve/comm/nccl_communicator.h"
#include "tpserve/common/error.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#if TPS_HAS_NCCL
#include <cuda_runtime_api.h>
#endif

namespace tps {
namespace {

using testing::mpi;

#if TPS_HAS_NCCL
// A device copy of a host vector, and back.
template <class T>
struct DeviceVector {
    explicit DeviceVector(const std::vector<T>& host) : n(host.size()) {
        EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~DeviceVector() { cudaFree(p); }
    std::vector<T> host() const {
        std::vector<T> out(n);
        EXPECT_EQ(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return out;
    }
    void* p = nullptr;
    size_t n = 0;
};

uint16_t bf16_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<uint16_t>(u >> 16);  // exact for the small integers used here
}
#endif

class Nccl : public ::testing::Test {
protected:
    void SetUp() override {
        if (!nccl_built()) GTEST_SKIP() << "built without NCCL";
        const int devices = cuda_device_count();
        if (devices < mpi().size()) GTEST_SKIP() << devices << " CUDA devices for " << mpi().size() << " ranks";
        world_ = mpi().world("nccl test world");
        nccl_ = make_nccl_communicator(*world_, mpi().rank());
    }
    std::unique_ptr<Communicator> world_, nccl_;
};

TEST_F(Nccl, AllReduceOfSmallIntegersIsBitExact) {
#if TPS_HAS_NCCL
    const int n = nccl_->size(), r = nccl_->rank();
    const size_t count = 100003;
    std::vector<float> f(count), fwant(count);
    std::vector<int32_t> i(count), iwant(count);
    std::vector<uint16_t> b(count), bwant(count);
    for (size_t k = 0; k < count; ++k) {
        const int v = (r + 1) * static_cast<int>(k % 7) - 3, w = n * (n + 1) / 2 * static_cast<int>(k % 7) - 3 * n;
        f[k] = static_cast<float>(v), fwant[k] = static_cast<float>(w);
        i[k] = v, iwant[k] = w;
        b[k] = bf16_of(static_cast<float>(v)), bwant[k] = bf16_of(static_cast<float>(w));
    }
    DeviceVector<float> df(f);
    DeviceVector<int32_t> di(i);
    DeviceVector<uint16_t> db(b);
    nccl_->all_reduce_sum(df.p, static_cast<int64_t>(count), DType::f32, "f32");
    nccl_->all_reduce_sum(di.p, static_cast<int64_t>(count), DType::i32, "i32");
    nccl_->all_reduce_sum(db.p, static_cast<int64_t>(count), DType::bf16, "bf16");
    EXPECT_EQ(df.host(), fwant);
    EXPECT_EQ(di.host(), iwant);
    EXPECT_EQ(db.host(), bwant);
#endif
}

TEST_F(Nccl, GatherBroadcastRingAndBarrier) {
#if TPS_HAS_NCCL
    const int n = nccl_->size(), r = nccl_->rank();
    DeviceVector<int32_t> mine(std::vector<int32_t>{r, 10 * r});
    DeviceVector<int32_t> all(std::vector<int32_t>(static_cast<size_t>(2 * n), -1));
    nccl_->all_gather(mine.p, all.p, 2 * sizeof(int32_t), "gather");
    const auto got = all.host();
    for (int q = 0; q < n; ++q) {
        EXPECT_EQ(got[static_cast<size_t>(2 * q)], q);
        EXPECT_EQ(got[static_cast<size_t>(2 * q + 1)], 10 * q);
    }
    DeviceVector<int32_t> b(std::vector<int32_t>(1000, r == 0 ? 7 : 0));
    nccl_->broadcast(b.p, 1000 * sizeof(int32_t), 0, "broadcast");
    EXPECT_EQ(b.host(), std::vector<int32_t>(1000, 7));
    if (n > 1) {
        DeviceVector<int32_t> out(std::vector<int32_t>(4096, r)), in(std::vector<int32_t>(4096, -1));
        const int next = (r + 1) % n, prev = (r + n - 1) % n;
        if (r % 2 == 0) {
            nccl_->send(out.p, 4096 * 4, next, "ring");
            nccl_->recv(in.p, 4096 * 4, prev, "ring");
        } else {
            nccl_->recv(in.p, 4096 * 4, prev, "ring");
            nccl_->send(out.p, 4096 * 4, next, "ring");
        }
        EXPECT_EQ(in.host(), std::vector<int32_t>(4096, prev));
    }
    nccl_->barrier("the end");
#endif
}

// Queued on one stream (NcclQueue, as a split model's collectives are): two sums with a copy
// between them and a ring of sends, none waited for until the queue is; then every result is
// there, in stream order, and each collective counted once.
TEST_F(Nccl, QueuedCollectivesCompleteInStreamOrder) {
#if TPS_HAS_NCCL
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
    {
        NcclQueue queue(s);
        auto q = make_nccl_communicator(*world_, mpi().rank(), s, &queue);
        const int n = q->size(), r = q->rank();
        const int32_t sum = n * (n + 1) / 2;  // of r + 1 over the ranks
        DeviceVector<int32_t> x(std::vector<int32_t>(1000, r + 1)), y(std::vector<int32_t>(1000, -1));
        q->all_reduce_sum(x.p, 1000, DType::i32, "first sum");
        ASSERT_EQ(cudaMemcpyAsync(y.p, x.p, 4000, cudaMemcpyDeviceToDevice, s), cudaSuccess);
        q->all_reduce_sum(y.p, 1000, DType::i32, "second sum");  // of the copy: n * sum
        if (n > 1) {
            const int next = (r + 1) % n, prev = (r + n - 1) % n;
            if (r % 2 == 0) {
                q->send(y.p, 4000, next, "ring");
                q->recv(x.p, 4000, prev, "ring");
            } else {
                q->recv(x.p, 4000, prev, "ring");
                q->send(y.p, 4000, next, "ring");
            }
        }
        EXPECT_EQ(queue.queued(), n > 1 ? 4u : 2u);
        EXPECT_EQ(q->stats().calls[static_cast<size_t>(CommOp::all_reduce)], 0);
        queue.wait();
        EXPECT_EQ(queue.queued(), 0u);
        EXPECT_EQ(y.host(), std::vector<int32_t>(1000, n * sum));
        EXPECT_EQ(x.host(), std::vector<int32_t>(1000, n > 1 ? n * sum : sum));
        EXPECT_EQ(q->stats().calls[static_cast<size_t>(CommOp::all_reduce)], 2);
        EXPECT_EQ(q->stats().calls[static_cast<size_t>(CommOp::send)], n > 1 ? 1 : 0);
    }
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
#endif
}

// A collective the last rank never makes: the others' queue wait ends at the deadline with an
// error naming that collective (not the one before it, which completed), and aborts every
// communicator of the queue, so later calls on either are refused rather than queued in vain.
TEST_F(Nccl, AStalledCollectiveIsNamedByTheQueuesWaitAndAbortsItsCommunicators) {
#if TPS_HAS_NCCL
    if (mpi().size() < 2) GTEST_SKIP() << "needs a peer";
    const int r = world_->rank(), last = world_->size() - 1;
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
    {
        NcclQueue queue(s);
        auto a = make_nccl_communicator(*world_, mpi().rank(), s, &queue);
        auto b = make_nccl_communicator(*world_, mpi().rank(), s, &queue);
        DeviceVector<float> x(std::vector<float>(64, 1.0f));
        a->all_reduce_sum(x.p, 64, DType::f32, "a sum every rank makes");
        if (r != last) {
            a->all_reduce_sum(x.p, 64, DType::f32, "the sum the last rank skips");
            const testing::ScopedDeadline short_deadline(1.0);
            const auto start = std::chrono::steady_clock::now();
            try {
                queue.wait();
                ADD_FAILURE() << "no timeout";
            } catch (const CommError& e) {
                const std::string m = e.what();
                EXPECT_NE(m.find("all-reduce (the sum the last rank skips)"), std::string::npos) << m;
                EXPECT_NE(m.find("did not complete within 1 s"), std::string::npos) << m;
            }
            const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            EXPECT_LT(took, 10.0);  // the deadline and the liveness ping, not the test's deadline
            EXPECT_EQ(queue.queued(), 0u);
            EXPECT_THROW(a->all_reduce_sum(x.p, 64, DType::f32, "after the abort"), CommError);
            EXPECT_THROW(b->barrier("after the abort"), CommError);
        } else {
            queue.wait();  // its own sum completed with the others'
        }
        world_->barrier("after the stalled sum");  // (the last rank answers liveness pings here)
    }
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
#endif
}

}  // namespace
}  // namespace tps
