// NcclCommunicator on one GPU without MPI (what scripts/gpu-check can run where there is no MPI):
// built over a one-rank host communicator, every collective on device buffers returns what one
// rank's sum, gather and broadcast give, bit for bit; on the CUDA backend's own stream a
// collective is ordered between the kernels that write and read its buffer. Skipped where the
// build has no NCCL or no GPU is usable.
#include "tpserve/comm/nccl_communicator.h"
#include "tpserve/common/error.h"
#include "tpserve/engine/backend.h"

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <random>
#include <vector>

#if TPS_HAS_NCCL
#include <cuda_runtime_api.h>
#endif

namespace tps {
namespace {

// One rank, host memory: the group NCCL's id is "broadcast" over.
class OneRank final : public Communicator {
public:
    explicit OneRank(double deadline = kDefaultDeadlineSeconds) : deadline_(deadline) {}
    int rank() const noexcept override { return 0; }
    int size() const noexcept override { return 1; }
    int world_rank(int) const override { return 0; }
    void all_reduce_sum(void*, int64_t, DType, std::string_view) override {}
    void all_gather(const void* in, void* out, int64_t bytes, std::string_view) override {
        std::memcpy(out, in, static_cast<size_t>(bytes));
    }
    void broadcast(void*, int64_t, int, std::string_view) override {}
    void send(const void*, int64_t, int, std::string_view what) override { throw UsageError(std::string(what)); }
    void recv(void*, int64_t, int, std::string_view what) override { throw UsageError(std::string(what)); }
    void barrier(std::string_view) override {}
    void post_message(std::vector<uint8_t> m, int, std::string_view) override { posted_.push_back(std::move(m)); }
    std::vector<uint8_t> receive_message(int, std::string_view what, const std::function<void()>&) override {
        if (posted_.empty()) throw CommError("one rank: nothing posted for " + std::string(what));
        auto m = std::move(posted_.front());
        posted_.pop_front();
        return m;
    }
    void flush_posted(std::string_view) override {}
    std::string name() const override { return "one rank"; }
    double deadline_seconds() const noexcept override { return deadline_; }

private:
    double deadline_;
    std::deque<std::vector<uint8_t>> posted_;
};

class NcclOneRank : public ::testing::Test {
protected:
    void SetUp() override {
        if (!nccl_built()) GTEST_SKIP() << "built without NCCL";
        if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU: " << cuda_backend_unavailable(0);
    }
};

#if TPS_HAS_NCCL
template <class T>
std::vector<T> round_trip(const std::vector<T>& host, const std::function<void(void*)>& op) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, host.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    op(d);
    std::vector<T> out(host.size());
    EXPECT_EQ(cudaMemcpy(out.data(), d, host.size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d);
    return out;
}

TEST_F(NcclOneRank, CollectivesOnDeviceBuffersGiveOneRanksAnswer) {
    OneRank host;
    auto nccl = make_nccl_communicator(host, 0);
    EXPECT_TRUE(nccl->device_buffers());
    std::mt19937 rng(5);
    std::uniform_int_distribution<int32_t> small(-1000, 1000);
    std::vector<float> f(4099);
    for (auto& x : f) x = static_cast<float>(small(rng)) / 8.0f;
    EXPECT_EQ(round_trip<float>(f, [&](void* d) { nccl->all_reduce_sum(d, 4099, DType::f32, "f32 sum"); }), f);
    std::vector<int32_t> i(777);
    for (auto& x : i) x = small(rng);
    EXPECT_EQ(round_trip<int32_t>(i, [&](void* d) { nccl->all_reduce_sum(d, 777, DType::i32, "i32 sum"); }), i);
    std::vector<uint16_t> h(64);
    for (auto& x : h) x = static_cast<uint16_t>(0x3f80 + (small(rng) & 0x7f));  // bf16 in [1, 2)
    EXPECT_EQ(round_trip<uint16_t>(h, [&](void* d) { nccl->all_reduce_sum(d, 64, DType::bf16, "bf16 sum"); }), h);
    EXPECT_EQ(round_trip<float>(f, [&](void* d) { nccl->broadcast(d, 4099 * 4, 0, "broadcast"); }), f);
    const auto gathered = round_trip<float>(std::vector<float>(2 * 100, 0.0f), [&](void* d) {
        void* in = nullptr;
        ASSERT_EQ(cudaMalloc(&in, 100 * 4), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(in, f.data(), 100 * 4, cudaMemcpyHostToDevice), cudaSuccess);
        nccl->all_gather(in, d, 100 * 4, "gather");
        cudaFree(in);
    });
    EXPECT_TRUE(std::equal(f.begin(), f.begin() + 100, gathered.begin()));
    nccl->barrier("barrier");
    EXPECT_EQ(nccl->stats().calls[static_cast<size_t>(CommOp::all_reduce)], 3);
    EXPECT_THROW(nccl->all_reduce_sum(nullptr, 1, DType::q4_0, "a type NCCL has not"), UsageError);
}

// x[k] = k % a and y[k] = k % b, on the host and on the backend's device (tx, ty)
struct Operands {
    Operands(Backend& gpu, int64_t n, int a, int b) : x(static_cast<size_t>(n)), y(static_cast<size_t>(n)) {
        for (int64_t k = 0; k < n; ++k) {
            x[static_cast<size_t>(k)] = static_cast<float>(k % a);
            y[static_cast<size_t>(k)] = static_cast<float>(k % b);
        }
        dx = gpu.allocate(n * 4, MemoryTag::activations);
        dy = gpu.allocate(n * 4, MemoryTag::activations);
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(dx->data(), x.data(), static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(dy->data(), y.data(), static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice), cudaSuccess);
        tx = Tensor{dx->data(), DType::f32, 1, n};
        ty = Tensor{dy->data(), DType::f32, 1, n};
    }
    std::vector<float> x, y;
    std::unique_ptr<DeviceMemory> dx, dy;
    Tensor tx, ty;
};

// x += y by the backend's kernel, the all-reduce on the same stream, then x += y again: the
// collective sits between the two kernels, so x ends at x + 2y.
TEST_F(NcclOneRank, OnTheCudaBackendsStreamACollectiveIsOrderedWithItsKernels) {
    auto gpu = make_cuda_backend(0);
    OneRank host;
    auto nccl = make_nccl_communicator(host, 0, gpu->native_stream());
    const int64_t n = 1 << 20;
    const Operands xy(*gpu, n, 97, 13);
    const std::vector<float>&x = xy.x, &y = xy.y;
    const Tensor tx = xy.tx, ty = xy.ty;
    gpu->add(tx, ty);
    nccl->all_reduce_sum(tx.data, n, DType::f32, "between two kernels");
    gpu->add(tx, ty);
    std::vector<float> out(static_cast<size_t>(n));
    gpu->to_host(tx, out.data());
    for (int64_t k = 0; k < n; ++k) {
        ASSERT_EQ(out[static_cast<size_t>(k)], x[static_cast<size_t>(k)] + 2 * y[static_cast<size_t>(k)]) << k;
    }
}

// The same with the collectives queued (NcclQueue, as a split model runs): the calls return with
// the work on the stream, the backend's output waits for them through the queue, and each
// collective is counted (calls and bytes) once it has been waited for.
TEST_F(NcclOneRank, QueuedCollectivesAreWaitedForByTheBackendsOutput) {
    auto gpu = make_cuda_backend(0);
    OneRank host;
    EXPECT_THROW({ NcclQueue no_stream(nullptr); }, Error);
    NcclQueue queue(gpu->native_stream());
    EXPECT_THROW(make_nccl_communicator(host, 0, nullptr, &queue), UsageError);  // not the queue's stream
    auto nccl = make_nccl_communicator(host, 0, gpu->native_stream(), &queue);
    gpu->set_stream_wait([&] { queue.wait(); });
    const int64_t n = 4096;
    const Operands xy(*gpu, n, 31, 7);
    const std::vector<float>&x = xy.x, &y = xy.y;
    const Tensor tx = xy.tx, ty = xy.ty;
    for (int i = 0; i < 3; ++i) {
        gpu->add(tx, ty);
        nccl->all_reduce_sum(tx.data, n, DType::f32, "between kernels");
    }
    EXPECT_EQ(queue.queued(), 3u);
    EXPECT_EQ(nccl->stats().calls[static_cast<size_t>(CommOp::all_reduce)], 0);  // not waited for yet
    gpu->add(tx, ty);
    std::vector<float> out(static_cast<size_t>(n));
    gpu->to_host(tx, out.data());
    EXPECT_EQ(queue.queued(), 0u);
    for (int64_t k = 0; k < n; ++k) {
        ASSERT_EQ(out[static_cast<size_t>(k)], x[static_cast<size_t>(k)] + 4 * y[static_cast<size_t>(k)]) << k;
    }
    const auto a = static_cast<size_t>(CommOp::all_reduce);
    EXPECT_EQ(nccl->stats().calls[a], 3);
    EXPECT_EQ(nccl->stats().bytes[a], 3 * n * 4);
    // synchronize() waits the same way; with nothing queued it is a plain wait
    nccl->barrier("after the output");
    EXPECT_EQ(queue.queued(), 1u);
    gpu->synchronize();
    EXPECT_EQ(queue.queued(), 0u);
    gpu->synchronize();
    nccl.reset();
}
#else
TEST_F(NcclOneRank, SkippedInABuildWithoutNccl) {}
#endif

}  // namespace
}  // namespace tps
