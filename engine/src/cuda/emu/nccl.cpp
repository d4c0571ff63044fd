// The emulator's NCCL (include/nccl.h). The ranks of a communicator are processes of one host
// that map one POSIX shared-memory segment, named by the unique id. Each rank has a slot for its
// part of a collective and one per peer for sends; counters in the segment's header say how far
// each rank has got. An operation is queued on its communicator and added to its CUDA stream as
// pending work (internal.h): polled, it copies its part in once every peer has read that slot's
// last contents, and its result out once every part it needs is there. So a missing peer leaves
// the stream not ready, for the caller's deadline to catch instead of a hang, and a peer that
// aborted shows as ncclRemoteError. Sums add the parts in rank order, rounding to the element
// type after each addition, so every rank gets the same bits.
#include "internal.h"
#include "nccl.h"

#include "tpserve/engine/numeric.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>

namespace tpsemu {
namespace {

constexpr int kMaxRanks = 16;
constexpr char kPrefix[] = "/tpsemu-nccl-";
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the header's counters are shared between processes");

struct Header {
    std::atomic<uint64_t> ranks;  // the communicator's size and slot bytes, set by the first rank
    std::atomic<uint64_t> slot;   // to arrive: a rank that differs is refused
    std::atomic<uint64_t> aborted;
    std::atomic<uint64_t> joined[kMaxRanks];
    std::atomic<uint64_t> posted[kMaxRanks];      // the last collective rank r put its part in for
    std::atomic<uint64_t> part_bytes[kMaxRanks];  // and that part's bytes
    std::atomic<uint64_t> taken[kMaxRanks];       // the last collective rank r read every part of
    std::atomic<uint64_t> sent[kMaxRanks][kMaxRanks];  // [from][to]: sends posted
    std::atomic<uint64_t> sent_bytes[kMaxRanks][kMaxRanks];
    std::atomic<uint64_t> received[kMaxRanks][kMaxRanks];  // [from][to]: sends received
};

constexpr size_t header_bytes() { return (sizeof(Header) + 4095) & ~size_t{4095}; }

// A slot's bytes: the largest message (TPS_NCCL_EMULATE_MIB, 64 by default). The segment is sparse:
// only what is written takes memory.
size_t slot_bytes() {
    const char* v = std::getenv("TPS_NCCL_EMULATE_MIB");
    const long long mib = v ? std::atoll(v) : 0;
    return static_cast<size_t>(mib > 0 ? mib : 64) << 20;
}

size_t type_bytes(ncclDataType_t t) {
    switch (t) {
        case ncclInt8:
        case ncclUint8: return 1;
        case ncclFloat16:
        case ncclBfloat16: return 2;
        case ncclInt32:
        case ncclUint32:
        case ncclFloat32: return 4;
        case ncclInt64:
        case ncclUint64:
        case ncclFloat64: return 8;
    }
    return 0;
}

template <class T, class Add>
void sum_parts(void* out, const unsigned char* const* parts, int n, size_t count, Add add) {
    T* o = static_cast<T*>(out);
    for (size_t k = 0; k < count; ++k) {
        T acc;
        std::memcpy(&acc, parts[0] + k * sizeof(T), sizeof(T));
        for (int q = 1; q < n; ++q) {
            T v;
            std::memcpy(&v, parts[q] + k * sizeof(T), sizeof(T));
            acc = add(acc, v);
        }
        std::memcpy(o + k, &acc, sizeof(T));
    }
}

void sum(ncclDataType_t t, void* out, const unsigned char* const* parts, int n, size_t count) {
    auto plain = [](auto a, auto b) { return static_cast<decltype(a)>(a + b); };
    switch (t) {
        case ncclInt8: return sum_parts<int8_t>(out, parts, n, count, plain);
        case ncclUint8: return sum_parts<uint8_t>(out, parts, n, count, plain);
        case ncclInt32: return sum_parts<int32_t>(out, parts, n, count, plain);
        case ncclUint32: return sum_parts<uint32_t>(out, parts, n, count, plain);
        case ncclInt64: return sum_parts<int64_t>(out, parts, n, count, plain);
        case ncclUint64: return sum_parts<uint64_t>(out, parts, n, count, plain);
        case ncclFloat32: return sum_parts<float>(out, parts, n, count, plain);
        case ncclFloat64: return sum_parts<double>(out, parts, n, count, plain);
        case ncclFloat16:
            return sum_parts<uint16_t>(out, parts, n, count, [](uint16_t a, uint16_t b) {
                return tps::f32_to_f16(tps::f16_to_f32(a) + tps::f16_to_f32(b));
            });
        case ncclBfloat16:
            return sum_parts<uint16_t>(out, parts, n, count, [](uint16_t a, uint16_t b) {
                return tps::f32_to_bf16(tps::bf16_to_f32(a) + tps::bf16_to_f32(b));
            });
    }
}

enum class Kind { all_reduce, all_gather, broadcast, send, recv };

struct Op {
    uint64_t id = 0;
    Kind kind = Kind::all_reduce;
    const void* in = nullptr;
    void* out = nullptr;
    ncclDataType_t type = ncclUint8;
    size_t count = 0;
    size_t bytes = 0;  // of one rank's part (a send's, a receive's)
    int peer = 0;      // a broadcast's root, a send's or receive's peer
    uint64_t seq = 0;  // the collective's, or the send's to (the receive's from) the peer
    bool posted = false;
};

ncclResult_t complain(ncclResult_t r, const std::string& what) {
    std::fprintf(stderr, "tpserve NCCL emulator: %s\n", what.c_str());
    return r;
}

}  // namespace

struct NcclComm {
    std::string name;
    int nranks = 0, rank = 0;
    bool blocking = true;
    size_t slot = 0, mapped = 0;
    unsigned char* base = nullptr;
    Header* h = nullptr;
    bool unlinked = false;
    bool finalizing = false;
    int fd = -1;                                 // the segment's, to give slots real memory
    size_t backed[kMaxRanks * (kMaxRanks + 1)] = {};  // bytes of each slot given memory so far
    ncclResult_t error = ncclSuccess;
    uint64_t collectives = 0, next_id = 1, done_id = 0;
    uint64_t sends[kMaxRanks] = {}, receives[kMaxRanks] = {};
    std::deque<Op> queue;

    unsigned char* part(int r) { return base + header_bytes() + static_cast<size_t>(r) * slot; }
    unsigned char* mailbox(int from, int to) {
        return base + header_bytes() + static_cast<size_t>(nranks + from * nranks + to) * slot;
    }

    // Before writing `bytes` into a slot: memory for them in the segment (a sparse tmpfs file
    // past /dev/shm's room would kill the process with SIGBUS on the write), or the error.
    bool back(unsigned char* at, size_t bytes) {
        const auto offset = static_cast<size_t>(at - base);
        size_t& done = backed[(offset - header_bytes()) / slot];
        if (bytes <= done) return true;
        const int r = posix_fallocate(fd, static_cast<off_t>(offset), static_cast<off_t>(bytes));
        if (r != 0) {
            error = complain(ncclSystemError, "no room in /dev/shm for a " + std::to_string(bytes) + "-byte message (" +
                                                  std::strerror(r) + "); a smaller TPS_NCCL_EMULATE_MIB does not help");
            return false;
        }
        done = bytes;
        return true;
    }

    bool all_joined() const {
        for (int r = 0; r < nranks; ++r) {
            if (h->joined[r].load(std::memory_order_acquire) == 0) return false;
        }
        return true;
    }

    // The name goes once every rank has mapped the segment (or the communicator goes): a job that
    // dies later leaves nothing in /dev/shm.
    void unlink_name() {
        if (!unlinked) shm_unlink(name.c_str());
        unlinked = true;
    }

    void release() {
        drop_pending(this);
        if (fd >= 0) close(fd);
        fd = -1;
        if (base) munmap(base, mapped);
        base = nullptr;
        h = nullptr;
    }

    // One attempt at op; whether it is done.
    bool step(Op& op) {
        if (op.kind == Kind::send) {
            if (!op.posted) {
                if (h->received[rank][op.peer].load(std::memory_order_acquire) + 1 < op.seq) return false;
                if (!back(mailbox(rank, op.peer), op.bytes)) return false;
                if (op.bytes) std::memcpy(mailbox(rank, op.peer), op.in, op.bytes);
                h->sent_bytes[rank][op.peer].store(op.bytes, std::memory_order_relaxed);
                h->sent[rank][op.peer].store(op.seq, std::memory_order_release);
                op.posted = true;
            }
            return true;
        }
        if (op.kind == Kind::recv) {
            if (h->sent[op.peer][rank].load(std::memory_order_acquire) < op.seq) return false;
            const uint64_t bytes = h->sent_bytes[op.peer][rank].load(std::memory_order_relaxed);
            if (bytes != op.bytes) {
                error = complain(ncclInvalidUsage, "rank " + std::to_string(rank) + " receives " + std::to_string(op.bytes) +
                                                       " bytes from rank " + std::to_string(op.peer) + ", which sent " +
                                                       std::to_string(bytes));
                return false;
            }
            if (op.bytes) std::memcpy(op.out, mailbox(op.peer, rank), op.bytes);
            h->received[op.peer][rank].store(op.seq, std::memory_order_release);
            return true;
        }
        if (!op.posted) {
            // this rank's slot is free once every peer has read the last collective's part in it
            for (int q = 0; q < nranks; ++q) {
                if (h->taken[q].load(std::memory_order_acquire) + 1 < op.seq) return false;
            }
            if (!back(part(rank), op.bytes)) return false;
            if (op.bytes && (op.kind != Kind::broadcast || op.peer == rank)) std::memcpy(part(rank), op.in, op.bytes);
            h->part_bytes[rank].store(op.bytes, std::memory_order_relaxed);
            h->posted[rank].store(op.seq, std::memory_order_release);
            op.posted = true;
        }
        for (int q = 0; q < nranks; ++q) {
            if (h->posted[q].load(std::memory_order_acquire) < op.seq) return false;
        }
        for (int q = 0; q < nranks; ++q) {
            const uint64_t bytes = h->part_bytes[q].load(std::memory_order_relaxed);
            if (bytes != op.bytes) {
                error = complain(ncclInvalidUsage, "collective " + std::to_string(op.seq) + ": rank " + std::to_string(rank) +
                                                       " gives " + std::to_string(op.bytes) + " bytes, rank " +
                                                       std::to_string(q) + " " + std::to_string(bytes));
                return false;
            }
        }
        if (op.bytes == 0) {
            // nothing to move
        } else if (op.kind == Kind::all_reduce) {
            const unsigned char* parts[kMaxRanks];
            for (int q = 0; q < nranks; ++q) parts[q] = part(q);
            sum(op.type, op.out, parts, nranks, op.count);
        } else if (op.kind == Kind::all_gather) {
            for (int q = 0; q < nranks; ++q) std::memcpy(static_cast<unsigned char*>(op.out) + q * op.bytes, part(q), op.bytes);
        } else {
            std::memcpy(op.out, part(op.peer), op.bytes);
        }
        h->taken[rank].store(op.seq, std::memory_order_release);
        return true;
    }

    // Advances the queue up to operation `id` as far as the peers allow; whether `id` is done.
    // Never past it: a later operation's input may be written by work queued between the two on
    // the stream. Nothing moves once a rank aborted or this one failed: the stream stays not
    // ready, the error is reported.
    bool progress(uint64_t id) {
        if (!h) return false;
        if (h->aborted.load(std::memory_order_acquire) != 0 && error == ncclSuccess) error = ncclRemoteError;
        while (error == ncclSuccess && !queue.empty() && queue.front().id <= id && all_joined()) {
            if (!step(queue.front())) break;
            done_id = queue.front().id;
            queue.pop_front();
        }
        return done_id >= id;
    }

    ncclResult_t enqueue(Op op, cudaStream_t stream, size_t out_bytes) {
        if (error != ncclSuccess) return error;
        if (op.kind != Kind::recv && op.bytes > 0 && !is_device_range(op.in, op.bytes)) {
            return complain(ncclInvalidArgument, "a send buffer that is not device memory of this process");
        }
        if (op.kind != Kind::send && out_bytes > 0 && !is_device_range(op.out, out_bytes)) {
            return complain(ncclInvalidArgument, "a receive buffer that is not device memory of this process");
        }
        if (op.bytes > slot) {
            return complain(ncclInvalidArgument, "a message of " + std::to_string(op.bytes) + " bytes is larger than a slot (" +
                                                     std::to_string(slot >> 20) + " MiB: TPS_NCCL_EMULATE_MIB)");
        }
        if (capturing(stream)) return complain(ncclInvalidUsage, "collectives in a CUDA graph capture are not emulated");
        // numbered once accepted: a refused call must not put this rank out of step with its peers
        op.seq = op.kind == Kind::send ? ++sends[op.peer] : op.kind == Kind::recv ? ++receives[op.peer] : ++collectives;
        op.id = next_id++;
        queue.push_back(op);
        const uint64_t id = op.id;
        add_pending(stream, this, [this, id] { return progress(id); });
        return ncclSuccess;
    }
};

namespace {

// Whether `comm` is a live communicator and `type` one whose elements have a size (and, with
// peer >= 0, whether `peer` is another rank of it): else the call is ncclInvalidArgument.
bool valid_call(const NcclComm* comm, ncclDataType_t type, int peer = -1) {
    return comm && comm->h && type_bytes(type) != 0 && (peer < 0 || (peer < comm->nranks && peer != comm->rank));
}

}  // namespace

}  // namespace tpsemu

using tpsemu::NcclComm;

const char* ncclGetErrorString(ncclResult_t result) {
    switch (result) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error (no emulated CUDA device: TPS_CUDA_EMULATE)";
        case ncclSystemError: return "unhandled system error (the emulator's shared memory)";
        case ncclInternalError: return "internal error";
        case ncclInvalidArgument: return "invalid argument";
        case ncclInvalidUsage: return "invalid usage";
        case ncclRemoteError: return "remote process exited or there was a network error";
        case ncclInProgress: return "NCCL operation in progress";
        case ncclNumResults: break;
    }
    return "unknown result code";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    if (!id) return ncclInvalidArgument;
    static std::atomic<uint64_t> counter{0};
    std::random_device rd;
    const unsigned long long salt = (static_cast<unsigned long long>(rd()) << 32) | rd();
    std::memset(id->internal, 0, sizeof id->internal);
    std::snprintf(id->internal, sizeof id->internal, "%s%d-%llu-%llx", tpsemu::kPrefix, static_cast<int>(getpid()),
                  static_cast<unsigned long long>(counter++), salt);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config) {
    if (!comm) return ncclInvalidArgument;
    *comm = nullptr;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) return ncclUnhandledCudaError;
    if (nranks < 1 || nranks > tpsemu::kMaxRanks || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    id.internal[NCCL_UNIQUE_ID_BYTES - 1] = 0;
    auto c = std::make_unique<NcclComm>();
    c->name = id.internal;
    if (c->name.rfind(tpsemu::kPrefix, 0) != 0) return ncclInvalidArgument;
    c->nranks = nranks;
    c->rank = rank;
    c->blocking = !config || config->blocking != 0;
    c->slot = tpsemu::slot_bytes();
    c->mapped = tpsemu::header_bytes() + static_cast<size_t>(nranks + nranks * nranks) * c->slot;
    const int fd = shm_open(c->name.c_str(), O_CREAT | O_RDWR, 0600);
    if (fd < 0) return tpsemu::complain(ncclSystemError, "shm_open " + c->name + ": " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || (static_cast<size_t>(st.st_size) < c->mapped && ftruncate(fd, static_cast<off_t>(c->mapped)) != 0)) {
        close(fd);
        return tpsemu::complain(ncclSystemError, "sizing " + c->name + ": " + std::strerror(errno));
    }
    c->fd = fd;
    void* p = mmap(nullptr, c->mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        c->release();
        return tpsemu::complain(ncclSystemError, "mapping " + c->name + ": " + std::strerror(errno));
    }
    c->base = static_cast<unsigned char*>(p);
    c->h = reinterpret_cast<tpsemu::Header*>(c->base);
    uint64_t ranks = 0, slot = 0;
    const bool same_ranks = c->h->ranks.compare_exchange_strong(ranks, static_cast<uint64_t>(nranks)) ||
                            ranks == static_cast<uint64_t>(nranks);
    const bool same_slot = c->h->slot.compare_exchange_strong(slot, c->slot) || slot == c->slot;
    if (!same_ranks || !same_slot) {
        c->release();
        return tpsemu::complain(ncclInvalidUsage, "rank " + std::to_string(rank) + " joins with " + std::to_string(nranks) +
                                                      " ranks and " + std::to_string(c->slot >> 20) + " MiB slots a communicator of " +
                                                      std::to_string(ranks ? ranks : nranks) + " ranks and " +
                                                      std::to_string((slot ? slot : c->slot) >> 20) +
                                                      " MiB slots (TPS_NCCL_EMULATE_MIB must agree)");
    }
    c->h->joined[rank].store(1, std::memory_order_release);
    if (c->blocking) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(300);
        while (!c->all_joined()) {
            if (std::chrono::steady_clock::now() > end) {
                c->unlink_name();
                c->release();
                return tpsemu::complain(ncclSystemError, "the other ranks did not join within 300 s");
            }
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }
    const bool joined = c->all_joined();
    if (joined && rank == 0) c->unlink_name();
    *comm = c.release();
    return joined ? ncclSuccess : ncclInProgress;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
    return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
    if (!comm || !state || !comm->h) return ncclInvalidArgument;
    if (comm->error == ncclSuccess && comm->h->aborted.load(std::memory_order_acquire) != 0) comm->error = ncclRemoteError;
    if (comm->error != ncclSuccess) {
        *state = comm->error;
    } else if (!comm->all_joined()) {
        *state = ncclInProgress;
    } else {
        if (comm->rank == 0) comm->unlink_name();
        if (comm->finalizing) comm->progress(comm->next_id - 1);
        *state = comm->finalizing && !comm->queue.empty() ? ncclInProgress : ncclSuccess;
    }
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm || !comm->h) return ncclInvalidArgument;
    comm->finalizing = true;
    if (comm->error != ncclSuccess) return comm->error;
    comm->progress(comm->next_id - 1);
    if (comm->blocking) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(300);
        while (!comm->queue.empty() && comm->error == ncclSuccess && std::chrono::steady_clock::now() < end) {
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            comm->progress(comm->next_id - 1);
        }
    }
    if (comm->error != ncclSuccess) return comm->error;
    return comm->queue.empty() ? ncclSuccess : ncclInProgress;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    if (comm->rank == 0) comm->unlink_name();
    comm->release();
    delete comm;
    return ncclSuccess;
}

// The peers' pending and later operations fail with ncclRemoteError instead of waiting.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    if (comm->h) comm->h->aborted.store(1, std::memory_order_release);
    comm->unlink_name();
    comm->release();
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    if (!tpsemu::valid_call(comm, type)) return ncclInvalidArgument;
    if (op != ncclSum) return tpsemu::complain(ncclInvalidArgument, "only sums are emulated");
    const size_t bytes = count * tpsemu::type_bytes(type);
    tpsemu::Op o;
    o.kind = tpsemu::Kind::all_reduce;
    o.in = sendbuff, o.out = recvbuff, o.type = type, o.count = count, o.bytes = bytes;
    return comm->enqueue(o, stream, bytes);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
    if (!tpsemu::valid_call(comm, type)) return ncclInvalidArgument;
    const size_t bytes = count * tpsemu::type_bytes(type);
    tpsemu::Op o;
    o.kind = tpsemu::Kind::all_gather;
    o.in = sendbuff, o.out = recvbuff, o.type = type, o.count = count, o.bytes = bytes;
    return comm->enqueue(o, stream, bytes * static_cast<size_t>(comm->nranks));
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream) {
    if (!tpsemu::valid_call(comm, type) || root < 0 || root >= comm->nranks) return ncclInvalidArgument;
    const size_t bytes = count * tpsemu::type_bytes(type);
    tpsemu::Op o;
    o.kind = tpsemu::Kind::broadcast;
    o.in = comm->rank == root ? sendbuff : recvbuff;  // (only the root's is read)
    o.out = recvbuff, o.type = type, o.count = count, o.bytes = bytes, o.peer = root;
    return comm->enqueue(o, stream, bytes);
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    if (peer < 0 || !tpsemu::valid_call(comm, type, peer)) return ncclInvalidArgument;
    tpsemu::Op o;
    o.kind = tpsemu::Kind::send;
    o.in = sendbuff, o.type = type, o.count = count, o.bytes = count * tpsemu::type_bytes(type), o.peer = peer;
    return comm->enqueue(o, stream, 0);
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    if (peer < 0 || !tpsemu::valid_call(comm, type, peer)) return ncclInvalidArgument;
    tpsemu::Op o;
    o.kind = tpsemu::Kind::recv;
    o.out = recvbuff, o.type = type, o.count = count, o.bytes = count * tpsemu::type_bytes(type), o.peer = peer;
    return comm->enqueue(o, stream, o.bytes);
}
