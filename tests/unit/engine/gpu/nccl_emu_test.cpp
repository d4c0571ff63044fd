// The emulator's NCCL (engine/src/cuda/emu/nccl.cpp), two ranks in one process, each on its own
// stream: results equal to the bit, a rank's operation not done (its stream not ready) until its
// peer's part is there and the work behind it queued, devices counted by TPS_CUDA_EMULATE, and
// misuse refused or reported as NCCL reports it. The multi-process case runs under mpirun (mpi_comm, mpi_cuda).
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

class NcclEmu : public ::testing::Test {
protected:
    void SetUp() override {
        ::setenv("TPS_CUDA_EMULATE", "2", 1);
        ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
        ASSERT_EQ(cudaStreamCreateWithFlags(&s_[0], cudaStreamNonBlocking), cudaSuccess);
        ASSERT_EQ(cudaStreamCreateWithFlags(&s_[1], cudaStreamNonBlocking), cudaSuccess);
        ncclUniqueId id;
        ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
        ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
        config.blocking = 0;
        // rank 0 joins first: the communicator is in progress until rank 1 has too
        ASSERT_EQ(ncclCommInitRankConfig(&c_[0], 2, id, 0, &config), ncclInProgress);
        ncclResult_t state = ncclSuccess;
        ASSERT_EQ(ncclCommGetAsyncError(c_[0], &state), ncclSuccess);
        EXPECT_EQ(state, ncclInProgress);
        ASSERT_EQ(ncclCommInitRankConfig(&c_[1], 2, id, 1, &config), ncclSuccess);
        ASSERT_EQ(ncclCommGetAsyncError(c_[0], &state), ncclSuccess);
        EXPECT_EQ(state, ncclSuccess);
    }
    void TearDown() override {
        for (ncclComm_t c : c_) {
            if (c) ncclCommDestroy(c);
        }
        for (cudaStream_t s : s_) cudaStreamDestroy(s);
        ::setenv("TPS_CUDA_EMULATE", "1", 1);
        cudaDeviceReset();
    }
    template <class T>
    T* device(const std::vector<T>& v) {
        void* p = nullptr;
        EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
        return static_cast<T*>(p);
    }
    template <class T>
    std::vector<T> host(const T* d, size_t n) {
        std::vector<T> out(n);
        EXPECT_EQ(cudaMemcpy(out.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return out;
    }
    // Both ranks' streams polled in turn until both are done (one thread plays both ranks: waiting
    // on one stream alone would wait for the other forever); whether they got there.
    bool settle() {
        for (int i = 0; i < 1000; ++i) {
            const cudaError_t a = cudaStreamQuery(s_[0]), b = cudaStreamQuery(s_[1]);
            if (a == cudaSuccess && b == cudaSuccess) return true;
        }
        return false;
    }
    ncclResult_t state(int r) {
        ncclResult_t s = ncclSuccess;
        EXPECT_EQ(ncclCommGetAsyncError(c_[r], &s), ncclSuccess);
        return s;
    }
    ncclComm_t c_[2] = {nullptr, nullptr};
    cudaStream_t s_[2] = {nullptr, nullptr};
};

TEST_F(NcclEmu, TwoRanksSumGatherBroadcastAndSend) {
    int n = 0;
    ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
    EXPECT_EQ(n, 2);
    EXPECT_EQ(cudaSetDevice(1), cudaSuccess);
    EXPECT_EQ(cudaSetDevice(2), cudaErrorInvalidDevice);
    // the parts add in rank order, rounding after each (1e8 + 1 is 1e8 in f32), alike on both ranks
    float* a = device(std::vector<float>{1e8f, 1.0f, 2.5f});
    float* b = device(std::vector<float>{1.0f, -3.0f, 0.25f});
    ASSERT_EQ(ncclAllReduce(a, a, 3, ncclFloat32, ncclSum, c_[0], s_[0]), ncclSuccess);
    EXPECT_EQ(cudaStreamQuery(s_[0]), cudaErrorNotReady);  // rank 1 has not put its part in
    ASSERT_EQ(ncclAllReduce(b, b, 3, ncclFloat32, ncclSum, c_[1], s_[1]), ncclSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s_[1]), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s_[0]), cudaSuccess);
    const std::vector<float> want = {1e8f + 1.0f, -2.0f, 2.75f};
    EXPECT_EQ(host(a, 3), want);
    EXPECT_EQ(host(b, 3), want);

    int* mine0 = device(std::vector<int>{7, 8});
    int* mine1 = device(std::vector<int>{9, 10});
    int* all0 = device(std::vector<int>(4, -1));
    int* all1 = device(std::vector<int>(4, -1));
    ASSERT_EQ(ncclAllGather(mine0, all0, 2, ncclInt32, c_[0], s_[0]), ncclSuccess);
    ASSERT_EQ(ncclAllGather(mine1, all1, 2, ncclInt32, c_[1], s_[1]), ncclSuccess);
    ASSERT_EQ(ncclBroadcast(mine1, mine1, 2, ncclInt32, 1, c_[1], s_[1]), ncclSuccess);
    ASSERT_EQ(ncclBroadcast(mine0, mine0, 2, ncclInt32, 1, c_[0], s_[0]), ncclSuccess);
    ASSERT_EQ(ncclSend(mine1, 2, ncclInt32, 0, c_[1], s_[1]), ncclSuccess);
    ASSERT_EQ(ncclRecv(all0, 2, ncclInt32, 1, c_[0], s_[0]), ncclSuccess);
    ASSERT_TRUE(settle());
    EXPECT_EQ(host(all1, 4), (std::vector<int>{7, 8, 9, 10}));
    EXPECT_EQ(host(mine0, 2), (std::vector<int>{9, 10}));  // the root's
    EXPECT_EQ(host(all0, 4), (std::vector<int>{9, 10, 9, 10}));  // gathered, then the first two received
    ASSERT_EQ(ncclCommFinalize(c_[0]), ncclSuccess);
    EXPECT_EQ(state(0), ncclSuccess);
}

TEST_F(NcclEmu, MisuseIsRefusedOrReportedAndAnAbortReachesThePeer) {
    float host_buffer[4] = {};
    float* d = device(std::vector<float>(4, 1.0f));
    float* e = device(std::vector<float>(3, 1.0f));
    // not device memory; not a sum; not a known type
    EXPECT_EQ(ncclAllReduce(host_buffer, host_buffer, 4, ncclFloat32, ncclSum, c_[0], s_[0]), ncclInvalidArgument);
    EXPECT_EQ(ncclAllReduce(d, d, 4, ncclFloat32, ncclMax, c_[0], s_[0]), ncclInvalidArgument);
    EXPECT_EQ(ncclAllReduce(d, d, 4, static_cast<ncclDataType_t>(42), ncclSum, c_[0], s_[0]), ncclInvalidArgument);
    EXPECT_EQ(ncclSend(d, 4, ncclFloat32, 0, c_[0], s_[0]), ncclInvalidArgument);  // to itself
    // the ranks disagree on a collective's size: both report it, neither stream completes
    ASSERT_EQ(ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c_[0], s_[0]), ncclSuccess);
    ASSERT_EQ(ncclAllReduce(e, e, 3, ncclFloat32, ncclSum, c_[1], s_[1]), ncclSuccess);
    EXPECT_EQ(cudaStreamQuery(s_[1]), cudaErrorNotReady);  // rank 0's part is not there yet
    EXPECT_EQ(cudaStreamQuery(s_[0]), cudaErrorNotReady);  // both are, and they differ
    EXPECT_EQ(cudaStreamQuery(s_[1]), cudaErrorNotReady);
    EXPECT_EQ(state(0), ncclInvalidUsage);
    EXPECT_EQ(state(1), ncclInvalidUsage);
    // an abort: the peer's communicator says so
    ASSERT_EQ(ncclCommAbort(c_[1]), ncclSuccess);
    c_[1] = nullptr;
    EXPECT_EQ(state(0), ncclInvalidUsage);  // its first error stays
}

TEST_F(NcclEmu, AnAbortedPeerIsARemoteError) {
    float* d = device(std::vector<float>(4, 1.0f));
    ASSERT_EQ(ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c_[0], s_[0]), ncclSuccess);
    EXPECT_EQ(cudaStreamQuery(s_[0]), cudaErrorNotReady);
    ASSERT_EQ(ncclCommAbort(c_[1]), ncclSuccess);
    c_[1] = nullptr;
    EXPECT_EQ(cudaStreamQuery(s_[0]), cudaErrorNotReady);  // never done: the caller's deadline
    EXPECT_EQ(state(0), ncclRemoteError);
    EXPECT_STREQ(ncclGetErrorString(ncclRemoteError), "remote process exited or there was a network error");
}

// Work issued behind a collective that is not done queues behind it and the caller goes on, as
// on a GPU; a later collective reads its input only once the work between the two has run; an
// event says when the stream has got past it; a copy to pinned memory queues, and one to pageable
// memory waits for the stream (as the CUDA runtime's does), here until a peer comes.
TEST_F(NcclEmu, WorkBehindACollectiveQueuesAndOnlyPageableCopiesWait) {
    int* a[2] = {device(std::vector<int>{1, 2}), device(std::vector<int>{10, 20})};
    int* out[2] = {device(std::vector<int>{-1, -1}), device(std::vector<int>{-1, -1})};
    int* pinned = nullptr;
    ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), 2 * sizeof(int)), cudaSuccess);
    pinned[0] = pinned[1] = -1;
    cudaEvent_t ev = nullptr;
    ASSERT_EQ(cudaEventCreate(&ev), cudaSuccess);
    // each rank: sum a, copy the sum to out, sum out; rank 1 comes later
    for (int r = 0; r < 2; ++r) {
        ASSERT_EQ(ncclAllReduce(a[r], a[r], 2, ncclInt32, ncclSum, c_[r], s_[r]), ncclSuccess);
        ASSERT_EQ(cudaMemcpyAsync(out[r], a[r], 2 * sizeof(int), cudaMemcpyDeviceToDevice, s_[r]), cudaSuccess);
        ASSERT_EQ(ncclAllReduce(out[r], out[r], 2, ncclInt32, ncclSum, c_[r], s_[r]), ncclSuccess);
        if (r == 1) break;
        ASSERT_EQ(cudaMemcpyAsync(pinned, out[0], 2 * sizeof(int), cudaMemcpyDeviceToHost, s_[0]), cudaSuccess);
        ASSERT_EQ(cudaEventRecord(ev, s_[0]), cudaSuccess);
        EXPECT_EQ(cudaEventQuery(ev), cudaErrorNotReady);
        EXPECT_EQ(pinned[0], -1) << "ran before the collective it follows";
    }
    ASSERT_TRUE(settle());
    EXPECT_EQ(cudaEventQuery(ev), cudaSuccess);
    EXPECT_EQ(pinned[0], 22);  // (1 + 10) twice: the second sum read the copy, not out's -1
    EXPECT_EQ(pinned[1], 44);
    EXPECT_EQ(host(out[1], 2), (std::vector<int>{22, 44}));

    int got[2] = {0, 0};
    ASSERT_EQ(ncclAllReduce(a[0], a[0], 2, ncclInt32, ncclSum, c_[0], s_[0]), ncclSuccess);
    std::thread peer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        EXPECT_EQ(ncclAllReduce(a[1], a[1], 2, ncclInt32, ncclSum, c_[1], s_[1]), ncclSuccess);
        EXPECT_EQ(cudaStreamSynchronize(s_[1]), cudaSuccess);
    });
    EXPECT_EQ(cudaMemcpyAsync(got, a[0], sizeof got, cudaMemcpyDeviceToHost, s_[0]), cudaSuccess);
    EXPECT_EQ(got[0], 22) << "a copy to pageable memory returned before the collective before it";
    EXPECT_EQ(got[1], 44);
    peer.join();
    EXPECT_EQ(cudaEventDestroy(ev), cudaSuccess);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
    EXPECT_EQ(cudaFreeHost(pinned), cudaErrorInvalidValue);  // not pinned memory (any more)
}

TEST(NcclEmuSetUp, ABadIdOrRankIsRefused) {
    ::setenv("TPS_CUDA_EMULATE", "1", 1);
    ncclComm_t c = nullptr;
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    std::strcpy(id.internal, "/not-ours");
    EXPECT_EQ(ncclCommInitRankConfig(&c, 2, id, 0, nullptr), ncclInvalidArgument);
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    EXPECT_EQ(ncclCommInitRankConfig(&c, 2, id, 2, nullptr), ncclInvalidArgument);
    EXPECT_EQ(ncclCommInitRankConfig(&c, 0, id, 0, nullptr), ncclInvalidArgument);
    ::unsetenv("TPS_CUDA_EMULATE");
    EXPECT_EQ(ncclCommInitRankConfig(&c, 1, id, 0, nullptr), ncclUnhandledCudaError);
    ::setenv("TPS_CUDA_EMULATE", "1", 1);
    // one rank, blocking: at once; a message larger than a slot (1 MiB here) is refused
    ::setenv("TPS_NCCL_EMULATE_MIB", "1", 1);
    ASSERT_EQ(ncclCommInitRankConfig(&c, 1, id, 0, nullptr), ncclSuccess);
    void* big = nullptr;
    ASSERT_EQ(cudaMalloc(&big, 2 << 20), cudaSuccess);
    EXPECT_EQ(ncclAllReduce(big, big, (2 << 20) / 4, ncclFloat32, ncclSum, c, nullptr), ncclInvalidArgument);
    EXPECT_EQ(ncclAllReduce(big, big, (1 << 20) / 4, ncclFloat32, ncclSum, c, nullptr), ncclSuccess);
    EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    EXPECT_EQ(ncclCommDestroy(c), ncclSuccess);
    cudaFree(big);
    // ranks that disagree on the slot size are refused, not left to misread each other
    ncclComm_t a = nullptr, b = nullptr;
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ASSERT_EQ(ncclCommInitRankConfig(&a, 2, id, 0, &config), ncclInProgress);
    ::setenv("TPS_NCCL_EMULATE_MIB", "2", 1);
    EXPECT_EQ(ncclCommInitRankConfig(&b, 2, id, 1, &config), ncclInvalidUsage);
    ::unsetenv("TPS_NCCL_EMULATE_MIB");
    EXPECT_EQ(b, nullptr);
    EXPECT_EQ(ncclCommAbort(a), ncclSuccess);
}

}  // namespace
