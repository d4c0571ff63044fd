// The emulator's executor: every CUDA thread of a block is a fiber on the launching host thread
// (a stack of its own and a switch of registers: tpsemu_switch below, ucontext off x86-64). A
// fiber runs until it reaches a barrier or a warp intrinsic, or ends. When none can run, the
// collectives whose every participant has arrived complete, and their threads run on. Between two
// barriers the threads run in a shuffled order (seeded by the launch count, so a run repeats): a
// kernel that reads what another thread writes without a barrier between them sees a different
// answer than it would in thread order, and its test fails. A collective that can never complete
// (a __syncthreads some threads skip, a warp intrinsic whose mask names a lane that left) fails
// the launch, naming the block and what each thread waits at.
#include "internal.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define TPS_EMU_ASAN 1
#else
#define TPS_EMU_ASAN 0
#endif

namespace tpsemu {
namespace {

constexpr size_t kStackBytes = size_t{256} << 10;  // what a kernel's frames need, ASan's redzones included

enum class State { runnable, at_barrier, at_warp_op, done };

// The callee-saved registers pushed on the current stack, the stack pointer saved to *from and
// *to's loaded, its registers popped and its return address taken: a switch between fibers.
#if defined(__x86_64__)
extern "C" void tpsemu_switch(void** from, void* to);
asm(R"(
    .text
    .globl tpsemu_switch
    .type tpsemu_switch, @function
tpsemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tpsemu_switch, .-tpsemu_switch
)");
struct Context {
    void* sp = nullptr;
};
#else
struct Context {
    ucontext_t uc{};
};
#endif

struct Fiber {
    Context uc;
    int index = 0;
    void* stack = nullptr;  // kStackBytes, its lowest page a guard
    ThreadCtx ctx;
    State state = State::runnable;
    // the collective it waits at, and what it brings
    unsigned mask = 0;
    WarpOp op = WarpOp::shfl_xor;
    uint64_t value = 0;
    int arg = 0;
    uint64_t result = 0;
    void* asan_fake_stack = nullptr;
};

// splitmix64: the shuffled order needs no more than a cheap, seeded sequence
struct Rng {
    uint64_t s;
    uint64_t operator()() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

// The block running on this host thread.
struct Block {
    std::vector<Fiber>* fibers = nullptr;
    int n = 0;
    Fiber* current = nullptr;
    Context scheduler;
    const std::function<void()>* body = nullptr;
    std::string fault;  // set by a thread that misused an intrinsic
    std::vector<int> runnable;
    std::vector<uint32_t> warp_waiting;  // per warp, the lanes waiting at a warp intrinsic
    int live = 0;                        // threads that have not returned
    int at_barrier = 0;
    uint64_t barrier_count = 0;          // of predicates, for __syncthreads_count / _or
    Rng* rng = nullptr;
    bool from_scheduler = false;  // the switch in progress left the scheduler's stack
    const void* scheduler_stack = nullptr;
    size_t scheduler_stack_bytes = 0;
};

thread_local Block* t_block = nullptr;
thread_local std::vector<Fiber> t_fibers;
thread_local std::vector<unsigned char> t_smem_store;
thread_local uint64_t t_launches = 0;
thread_local bool t_stacks_dirty = false;  // a block was abandoned mid-way

void* new_stack() {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    mprotect(p, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);  // an overflow faults, not corrupts
    return p;
}

void switch_context(Context& from, Context& to) {
#if defined(__x86_64__)
    tpsemu_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

void fiber_main();

// A fresh fiber on `stack`: the first switch to it enters fiber_main.
bool start_context(Context& c, void* stack) {
#if defined(__x86_64__)
    auto top = (reinterpret_cast<uintptr_t>(stack) + kStackBytes) & ~uintptr_t{15};
    auto* slot = reinterpret_cast<uint64_t*>(top);
    slot[-1] = 0;                                             // fiber_main's return address: none
    slot[-2] = reinterpret_cast<uint64_t>(&fiber_main);       // where tpsemu_switch returns to
    for (int r = 3; r <= 8; ++r) slot[-r] = 0;                // rbp, rbx, r12-r15
    slot[-9] = 0x1F80 | (uint64_t{0x037F} << 32);              // MXCSR and x87 control word at reset
    c.sp = &slot[-9];
    return true;
#else
    if (getcontext(&c.uc) != 0) return false;
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = kStackBytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, fiber_main, 0);
    return true;
#endif
}

// After a switch, on the stack switched to: ASan learns the stack it left, which is the
// scheduler's when the switch came from it.
void finish_switch(Block& b, void* fake_stack) {
#if TPS_EMU_ASAN
    const void* from = nullptr;
    size_t from_bytes = 0;
    __sanitizer_finish_switch_fiber(fake_stack, &from, &from_bytes);
    if (b.from_scheduler) {
        b.scheduler_stack = from;
        b.scheduler_stack_bytes = from_bytes;
    }
#else
    (void)fake_stack;
#endif
    b.from_scheduler = false;
}

// Fiber -> fiber, or fiber -> scheduler when `to` is null; a dying fiber is never resumed.
void leave(Fiber& f, Fiber* to, bool dying) {
    Block& b = *t_block;
#if TPS_EMU_ASAN
    if (to) {
        __sanitizer_start_switch_fiber(dying ? nullptr : &f.asan_fake_stack, to->stack, kStackBytes);
    } else {
        __sanitizer_start_switch_fiber(dying ? nullptr : &f.asan_fake_stack, b.scheduler_stack, b.scheduler_stack_bytes);
    }
#else
    (void)dying;
#endif
    b.current = to;
    switch_context(f.uc, to ? to->uc : b.scheduler);
    finish_switch(b, f.asan_fake_stack);
}

void complete_warp_op(Block& b, int w, unsigned mask);
void complete_barrier(Block& b);

// Books the state `f` stopped in: a thread that returned, or one arriving at a barrier or a warp
// intrinsic, which its arrival may complete.
void arrive(Block& b, Fiber& f) {
    const int i = f.index;
    switch (f.state) {
        case State::done:
            --b.live;
            complete_barrier(b);  // threads that returned no longer hold a barrier up
            break;
        case State::at_barrier:
            ++b.at_barrier;
            b.barrier_count += f.value;
            complete_barrier(b);
            break;
        case State::at_warp_op: {
            const int w = i / 32;
            uint32_t& waiting = b.warp_waiting[static_cast<size_t>(w)];
            waiting |= 1u << (i % 32);
            if ((f.mask >> (i % 32) & 1u) == 0) {
                b.fault = "a warp intrinsic's mask leaves out the calling lane";
                return;
            }
            if ((waiting & f.mask) == f.mask) complete_warp_op(b, w, f.mask);
            break;
        }
        case State::runnable: break;
    }
}

// Any runnable thread, taken out of the list: between barriers, no order is promised.
Fiber* next_runnable(Block& b) {
    if (b.runnable.empty()) return nullptr;
    const size_t pick = (*b.rng)() % b.runnable.size();
    const int i = b.runnable[pick];
    b.runnable[pick] = b.runnable.back();
    b.runnable.pop_back();
    return &(*b.fibers)[static_cast<size_t>(i)];
}

// The calling thread stops in state `s`; the next runnable thread runs (straight from this one's
// stack), or the scheduler when none can or a fault ended the block.
void stop(Fiber& f, State s) {
    Block& b = *t_block;
    f.state = s;
    arrive(b, f);
    const bool dying = s == State::done;
    Fiber* next = b.fault.empty() ? next_runnable(b) : nullptr;
    if (next == &f) return;  // its arrival completed its own collective, and it was picked
#if TPS_EMU_ASAN
    // the frames this thread leaves for good (these, and the switch's below them: a page) must
    // not leave their redzones poisoned on a stack the next block's threads reuse
    if (dying) {
        const auto top = reinterpret_cast<uintptr_t>(f.stack) + kStackBytes;
        const auto lo = std::max(reinterpret_cast<uintptr_t>(__builtin_frame_address(0)) - 4096, reinterpret_cast<uintptr_t>(f.stack));
        __asan_unpoison_memory_region(reinterpret_cast<void*>(lo), top - lo);
    }
#endif
    leave(f, next, dying);
}

void fiber_main() {
    Block& b = *t_block;
    Fiber& f = *b.current;
    finish_switch(b, nullptr);
    (*b.body)();
    stop(f, State::done);
    std::abort();  // a finished fiber is never resumed
}

// Scheduler -> fiber; back when no thread can run, or a fault ended the block.
void resume(Block& b, Fiber& f) {
    b.current = &f;
    b.from_scheduler = true;
    void* fake = nullptr;
#if TPS_EMU_ASAN
    __sanitizer_start_switch_fiber(&fake, static_cast<char*>(f.stack), kStackBytes);
#endif
    switch_context(b.scheduler, f.uc);
#if TPS_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    (void)fake;
    b.current = nullptr;
}

// The calling thread waits in state `s` until its collective completes.
uint64_t wait_at(State s) {
    Block* b = t_block;
    if (!b || !b->current) {
        std::fprintf(stderr, "tpserve CUDA emulator: a device intrinsic was called outside a kernel\n");
        std::abort();
    }
    Fiber& f = *b->current;
    stop(f, s);
    return f.result;
}

std::string describe(const Fiber& f, int i) {
    std::string s = "thread " + std::to_string(i);
    if (f.state == State::done) return s + " has returned";
    if (f.state == State::at_barrier) return s + " waits at __syncthreads";
    char m[16];
    std::snprintf(m, sizeof m, "0x%08x", f.mask);
    return s + " waits at a warp intrinsic with mask " + m;
}

// Completes the collective of warp `w` whose mask is `mask` if every lane it names waits at it:
// each lane's result computed, and the lanes runnable again.
void complete_warp_op(Block& b, int w, unsigned mask) {
    std::vector<Fiber>& fs = *b.fibers;
    const int base = w * 32, lanes = std::min(32, b.n - base);
    if (lanes < 32 && (mask >> lanes) != 0) {
        b.fault = "a warp intrinsic's mask names lanes past the last of a warp of " + std::to_string(lanes) + " threads";
        return;
    }
    WarpOp op{};
    uint64_t ballot = 0, sum = 0;
    bool first = true;
    for (unsigned m = mask; m; m &= m - 1) {
        const Fiber& o = fs[static_cast<size_t>(base + __builtin_ctz(m))];
        if (o.state != State::at_warp_op || o.mask != mask) return;  // a lane still on its way, or in another group
        if (!first && o.op != op) {
            b.fault = "lanes of one mask wait at different warp intrinsics";
            return;
        }
        op = o.op;
        first = false;
        if (o.value) ballot |= uint64_t{1} << __builtin_ctz(m);
        sum += o.value;
    }
    if (op == WarpOp::butterfly_sum || op == WarpOp::butterfly_max) {
        if (mask != 0xffffffffu) {
            b.fault = "a warp reduction over a partial warp is not emulated";
            return;
        }
        float v[32], next[32];
        for (int j = 0; j < 32; ++j) v[j] = from_bits<float>(fs[static_cast<size_t>(base + j)].value);
        for (int o = 16; o > 0; o >>= 1) {
            for (int j = 0; j < 32; ++j) next[j] = op == WarpOp::butterfly_sum ? v[j] + v[j ^ o] : std::fmax(v[j], v[j ^ o]);
            std::copy(next, next + 32, v);
        }
        for (int j = 0; j < 32; ++j) fs[static_cast<size_t>(base + j)].result = to_bits(v[j]);
    }
    for (unsigned m = mask; m; m &= m - 1) {
        const int j = __builtin_ctz(m);
        Fiber& me = fs[static_cast<size_t>(base + j)];
        switch (op) {
            case WarpOp::shfl_xor: {
                const int src = j ^ me.arg;
                if (src < 0 || src >= 32 || (mask >> src & 1u) == 0) {
                    b.fault = "__shfl_xor_sync reads lane " + std::to_string(src) + ", which is not in its mask";
                    return;
                }
                me.result = fs[static_cast<size_t>(base + src)].value;
                break;
            }
            case WarpOp::ballot: me.result = ballot; break;
            case WarpOp::reduce_add: me.result = static_cast<uint32_t>(sum); break;
            case WarpOp::butterfly_sum:
            case WarpOp::butterfly_max: break;
            case WarpOp::match_any:
                me.result = 0;
                for (unsigned k = mask; k; k &= k - 1) {
                    if (fs[static_cast<size_t>(base + __builtin_ctz(k))].value == me.value) me.result |= uint64_t{1} << __builtin_ctz(k);
                }
                break;
        }
    }
    for (unsigned m = mask; m; m &= m - 1) {
        const int i = base + __builtin_ctz(m);
        fs[static_cast<size_t>(i)].state = State::runnable;
        b.runnable.push_back(i);
    }
    b.warp_waiting[static_cast<size_t>(w)] &= ~mask;
}

// Completes the block's barrier once every thread still running waits at it.
void complete_barrier(Block& b) {
    if (b.live == 0 || b.at_barrier != b.live) return;
    std::vector<Fiber>& fs = *b.fibers;
    for (int i = 0; i < b.n; ++i) {
        Fiber& f = fs[static_cast<size_t>(i)];
        if (f.state != State::at_barrier) continue;
        f.result = b.barrier_count;
        f.state = State::runnable;
        b.runnable.push_back(i);
    }
    b.at_barrier = 0;
    b.barrier_count = 0;
}

std::string run_block(Block& b, Rng& rng) {
    std::vector<Fiber>& fs = *b.fibers;
    b.runnable.clear();
    b.warp_waiting.assign(static_cast<size_t>((b.n + 31) / 32), 0);
    b.live = b.n;
    b.at_barrier = 0;
    b.barrier_count = 0;
    for (int i = 0; i < b.n; ++i) {
        Fiber& f = fs[static_cast<size_t>(i)];
        f.index = i;
        f.state = State::runnable;
#if TPS_EMU_ASAN
        // a block abandoned at a fault left its frames' redzones poisoned
        if (t_stacks_dirty) __asan_unpoison_memory_region(f.stack, kStackBytes);
#endif
        if (!start_context(f.uc, f.stack)) return "getcontext failed";
        b.runnable.push_back(i);
    }
    b.rng = &rng;
    // the threads switch among themselves; control comes back when none can run
    while (Fiber* first = next_runnable(b)) {
        resume(b, *first);
        if (!b.fault.empty()) return b.fault;
    }
    if (b.live == 0) return {};
    std::string why = "deadlock: no barrier or warp intrinsic can complete (";
    int shown = 0;
    for (int i = 0; i < b.n && shown < 6; ++i) {
        const Fiber& f = fs[static_cast<size_t>(i)];
        if (f.state == State::done && shown > 0) continue;
        why += (shown++ ? "; " : "") + describe(f, i);
    }
    return why + ")";
}

}  // namespace

const ThreadCtx& ctx() {
    if (!t_block || !t_block->current) {
        std::fprintf(stderr, "tpserve CUDA emulator: threadIdx or blockIdx read outside a kernel\n");
        std::abort();
    }
    return t_block->current->ctx;
}

void syncthreads() {
    t_block->current->value = 0;
    wait_at(State::at_barrier);
}

int syncthreads_count(int predicate) {
    t_block->current->value = predicate != 0;
    return static_cast<int>(wait_at(State::at_barrier));
}

uint64_t warp_collective(unsigned mask, WarpOp op, uint64_t value, int arg) {
    Fiber& f = *t_block->current;
    f.mask = mask;
    f.op = op;
    f.value = value;
    f.arg = arg;
    return wait_at(State::at_warp_op);
}

void fault(const char* what) {
    Block* b = t_block;
    if (!b || !b->current) {
        std::fprintf(stderr, "tpserve CUDA emulator: %s\n", what);
        std::abort();
    }
    b->fault = what;
    wait_at(State::done);
    std::abort();  // the block is abandoned; this thread never runs again
}

std::string run_grid(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body) {
    const int n = static_cast<int>(block.x * block.y * block.z);
    while (t_fibers.size() < static_cast<size_t>(n)) {
        Fiber f;
        f.stack = new_stack();
        if (!f.stack) return "no memory for the stacks of " + std::to_string(n) + " threads";
        t_fibers.push_back(f);
    }
    // 16-byte aligned, refilled with 0xFF (NaN as floats) for every block: a kernel that reads
    // shared memory it did not write sees NaN, as the poisoned outputs of the tests do
    t_smem_store.resize(dynamic_smem + 16);
    auto* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(t_smem_store.data()) + 15) & ~uintptr_t{15});

    Block b;
    b.fibers = &t_fibers;
    b.n = n;
    b.body = &body;
    Block* outer = t_block;
    t_block = &b;
    Rng rng{++t_launches};
    std::string why;
    for (unsigned z = 0; z < grid.z && why.empty(); ++z) {
        for (unsigned y = 0; y < grid.y && why.empty(); ++y) {
            for (unsigned x = 0; x < grid.x && why.empty(); ++x) {
                std::memset(smem, 0xFF, dynamic_smem);
                for (int i = 0; i < n; ++i) {
                    ThreadCtx& c = t_fibers[static_cast<size_t>(i)].ctx;
                    const unsigned u = static_cast<unsigned>(i);
                    c.thread_idx = uint3{u % block.x, u / block.x % block.y, u / (block.x * block.y)};
                    c.block_idx = uint3{x, y, z};
                    c.block_dim = block;
                    c.grid_dim = grid;
                    c.dynamic_smem = smem;
                }
                why = run_block(b, rng);
                t_stacks_dirty = !why.empty();
                if (!why.empty()) {
                    why = "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "): " + why;
                }
            }
        }
    }
    t_block = outer;
    return why;
}

}  // namespace tpsemu
