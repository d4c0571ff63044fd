// MPI start-up and shutdown, the liveness probe, the deadline-bounded wait and the signal
// handler's last words (see mpi_world.h for why each exists).
#include "tpserve/comm/mpi_world.h"

#include "mpi_internal.h"
#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <deque>
#include <thread>

namespace tps {
namespace {

constexpr int kPingTag = 1;
constexpr int kPongTag = 2;
constexpr double kProbeGraceSeconds = 2.0;

// The signal handler's view: plain arrays, written before each wait, read only by the handler.
char g_operation[256] = "";
int g_rank = -1;

// A line built without allocation or stdio (async-signal-safe).
struct Line {
    char text[512];
    size_t n = 0;
    void add(const char* s) {
        while (*s && n + 1 < sizeof text) text[n++] = *s++;
    }
    void add(int v) {
        char digits[16];
        int k = 0;
        unsigned u = v < 0 ? 0u - static_cast<unsigned>(v) : static_cast<unsigned>(v);
        do {
            digits[k++] = static_cast<char>('0' + u % 10);
            u /= 10;
        } while (u && k < 15);
        if (v < 0) add("-");
        while (k > 0 && n + 1 < sizeof text) text[n++] = digits[--k];
    }
};

extern "C" void on_stop_signal(int sig) {
    Line line;
    line.add("tpserve rank ");
    line.add(g_rank);
    line.add(": stopped by signal ");
    line.add(sig);
    line.add(g_operation[0] ? " while waiting in " : " while computing");
    line.add(g_operation);
    line.add(" (another rank failed, or the job was interrupted)\n");
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, line.text, line.n);
    ::_exit(128 + sig);
}

// Serving: rank 0 stops the job in order (it tells every rank to shut down), so the other ranks
// note the first SIGTERM / SIGINT (mpirun forwards them to every rank) and go on until rank 0's
// shutdown or their deadline; a second one ends them with their last words.
std::atomic<int> g_stop_signals{0};  // lock-free: safe in a signal handler
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_deferred_stop_signal(int sig) {
    if (g_stop_signals.fetch_add(1) > 0) on_stop_signal(sig);
}

void install_signal_handlers() {
    struct sigaction sa{};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

}  // namespace

void set_current_operation(std::string_view what) noexcept {
    // the handler may interrupt this at any point: it sees "" or the whole new name, never a mix
    const size_t n = std::min(what.size(), sizeof g_operation - 1);
    g_operation[0] = '\0';
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (n == 0) return;
    std::memcpy(g_operation + 1, what.data() + 1, n - 1);
    g_operation[n] = '\0';
    std::atomic_signal_fence(std::memory_order_seq_cst);
    g_operation[0] = what[0];
}

void MpiWorld::defer_stop_signals() noexcept {
    struct sigaction sa{};
    sa.sa_handler = on_deferred_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT}) ::sigaction(sig, &sa, nullptr);
}

namespace mpi {

std::string error_string(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
    return std::string(text, static_cast<size_t>(len));
}

Runtime& runtime() {
    static Runtime r;
    return r;
}

void service_probes() {
    Runtime& rt = runtime();
    if (rt.probe == MPI_COMM_NULL) return;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, kPingTag, rt.probe, &flag, &st) != MPI_SUCCESS || !flag) return;
        // the pong echoes the ping's round, from a buffer kept for good (the send is freed, not
        // waited for; pings come only with a timeout, so these are few)
        static std::deque<int> echoes;
        int token = 0;
        if (MPI_Recv(&token, 1, MPI_INT, st.MPI_SOURCE, kPingTag, rt.probe, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
        echoes.push_back(token);
        MPI_Request req;
        if (MPI_Isend(&echoes.back(), 1, MPI_INT, st.MPI_SOURCE, kPongTag, rt.probe, &req) == MPI_SUCCESS) {
            MPI_Request_free(&req);
        }
    }
}

// World ranks that did not answer a ping within the grace period.
std::vector<int> silent_ranks() {
    Runtime& rt = runtime();
    std::vector<int> others;
    for (int r = 0; r < rt.size; ++r) {
        if (r != rt.rank) others.push_back(r);
    }
    // Each round's pings carry its number, and only a pong echoing it counts: a rank that woke up
    // after an earlier round's grace answered that round's ping late, and that pong must not pass
    // for an answer to this one. (Kept for good: freed sends may still read them.)
    static std::deque<int> rounds;
    rounds.push_back(static_cast<int>(rounds.size()) + 1);
    const int& ping = rounds.back();
    // a receive buffer per rank (the receives end before the next round: done or cancelled)
    static std::vector<int> pongs;
    pongs.assign(static_cast<size_t>(rt.size), 0);
    std::vector<MPI_Request> sends(others.size(), MPI_REQUEST_NULL), recvs(others.size(), MPI_REQUEST_NULL);
    std::vector<bool> answered(others.size(), false);
    for (size_t i = 0; i < others.size(); ++i) {
        if (MPI_Isend(&ping, 1, MPI_INT, others[i], kPingTag, rt.probe, &sends[i]) != MPI_SUCCESS) {
            sends[i] = MPI_REQUEST_NULL;
        }
        if (MPI_Irecv(&pongs[static_cast<size_t>(others[i])], 1, MPI_INT, others[i], kPongTag, rt.probe, &recvs[i]) !=
            MPI_SUCCESS) {
            recvs[i] = MPI_REQUEST_NULL;
        }
    }
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < others.size(); ++i) {
            if (answered[i] || recvs[i] == MPI_REQUEST_NULL) continue;
            int done = 0;
            if (MPI_Test(&recvs[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
                int& pong = pongs[static_cast<size_t>(others[i])];
                answered[i] = pong == ping;
                // a late answer to an earlier round's ping: wait for the next
                if (!answered[i] && MPI_Irecv(&pong, 1, MPI_INT, others[i], kPongTag, rt.probe, &recvs[i]) != MPI_SUCCESS) {
                    recvs[i] = MPI_REQUEST_NULL;
                }
            }
            all = all && answered[i];
        }
        service_probes();
        if (all) break;
        if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > kProbeGraceSeconds) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::vector<int> silent;
    for (size_t i = 0; i < others.size(); ++i) {
        if (!answered[i] && recvs[i] != MPI_REQUEST_NULL) {
            // a cancelled receive completes at once; if the pong came after all, it counts
            MPI_Cancel(&recvs[i]);
            MPI_Status st;
            MPI_Wait(&recvs[i], &st);
            int cancelled = 0;
            MPI_Test_cancelled(&st, &cancelled);
            answered[i] = cancelled == 0 && pongs[static_cast<size_t>(others[i])] == ping;
        }
        // this round's pong may already wait behind a stale one the last receive took
        for (int flag = 1; !answered[i] && flag;) {
            MPI_Status st;
            if (MPI_Iprobe(others[i], kPongTag, rt.probe, &flag, &st) != MPI_SUCCESS || !flag) break;
            int pong = 0;
            if (MPI_Recv(&pong, 1, MPI_INT, others[i], kPongTag, rt.probe, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
            answered[i] = pong == ping;
        }
        if (!answered[i]) silent.push_back(others[i]);
        if (sends[i] != MPI_REQUEST_NULL) MPI_Request_free(&sends[i]);
    }
    return silent;
}

[[noreturn]] void timed_out(std::string_view op, std::string_view what, std::string_view group, double seconds) {
    Runtime& rt = runtime();
    const std::vector<int> silent = silent_ranks();
    std::string who;
    if (silent.empty()) {
        who = "every other rank answers, so none is dead or stopped: the ranks disagree on what comes next";
    } else {
        std::vector<std::string> names;
        for (int r : silent) names.push_back(fmt::format("rank {} (host {})", r, rt.hosts.at(static_cast<size_t>(r))));
        who = fmt::format("not answering: {} (dead, stopped, or busy for longer than the deadline)", fmt::join(names, ", "));
    }
    throw CommError(fmt::format("rank {}: {} ({}) in {} did not complete within {:g} s; {}", rt.rank, op, what, group,
                                seconds, who));
}

void poll_until(const std::function<bool()>& ready, std::string_view op, std::string_view what, std::string_view group,
                double deadline_s, const std::function<void()>& idle) {
    using clock = std::chrono::steady_clock;
    if (ready()) return;
    set_current_operation(what);
    const auto start = clock::now();
    for (uint64_t spin = 1;; ++spin) {
        if (ready()) break;
        if ((spin & 255) == 0) {
            service_probes();
            if (idle) idle();
        }
        const double waited = std::chrono::duration<double>(clock::now() - start).count();
        if (waited > deadline_s) timed_out(op, what, group, deadline_s);
        // spin while an answer is likely imminent, then give the core away
        if (waited > 0.010) {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        } else if (waited > 0.0002) {
            std::this_thread::yield();
        }
    }
    set_current_operation("");
}

void wait_all(std::span<MPI_Request> requests, std::string_view op, std::string_view what, std::string_view group,
              double deadline_s, MPI_Status* statuses) {
    const auto n = static_cast<int>(requests.size());
    auto done = [&] {
        int flag = 0;
        const int rc = MPI_Testall(n, requests.data(), &flag, statuses);
        if (rc == MPI_ERR_IN_STATUS && statuses != MPI_STATUSES_IGNORE) {
            for (int i = 0; i < n; ++i) {
                if (statuses[i].MPI_ERROR != MPI_SUCCESS && statuses[i].MPI_ERROR != MPI_ERR_PENDING) {
                    throw CommError(fmt::format("rank {}: {} ({}) in {}: {}", runtime().rank, op, what, group,
                                                error_string(statuses[i].MPI_ERROR)));
                }
            }
        }
        TPS_CHECK_MPI(rc);
        return flag != 0;
    };
    // past the deadline the request is left as it is: a collective cannot be cancelled, and the
    // error ends the job anyway
    poll_until(done, op, what, group, deadline_s);
}

std::vector<uint8_t> receive_matched(MPI_Comm comm, int peer, int tag, std::string_view op, std::string_view what,
                                     std::string_view group, const std::function<void()>& idle) {
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status st;
    auto arrived = [&] {
        int flag = 0;
        TPS_CHECK_MPI(MPI_Improbe(peer, tag, comm, &flag, &message, &st));
        return flag != 0;
    };
    poll_until(arrived, op, what, group, runtime().deadline, idle);
    int n = 0;
    TPS_CHECK_MPI(MPI_Get_count(&st, MPI_BYTE, &n));
    std::vector<uint8_t> out(static_cast<size_t>(n));
    MPI_Request req;
    TPS_CHECK_MPI(MPI_Imrecv(out.data(), n, MPI_BYTE, &message, &req));
    wait_all(std::span<MPI_Request>(&req, 1), op, what, group, runtime().deadline);
    return out;
}

}  // namespace mpi

MpiWorld::MpiWorld(int* argc, char*** argv) {
    int initialised = 0;
    TPS_CHECK_MPI(MPI_Initialized(&initialised));
    TPS_CHECK(!initialised, "MPI is already initialised in this process");
    int provided = 0;
    TPS_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
    TPS_CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    TPS_CHECK_AS(CommError, provided >= MPI_THREAD_SERIALIZED,
                 "this MPI library offers thread level {}; tpserve needs MPI_THREAD_SERIALIZED ({})", provided,
                 MPI_THREAD_SERIALIZED);
    TPS_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    TPS_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    set_error_context({rank_, -1});
    g_rank = rank_;
    mpi::Runtime& rt = mpi::runtime();
    rt.rank = rank_;
    rt.size = size_;
    TPS_CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &rt.probe));

    std::array<char, MPI_MAX_PROCESSOR_NAME> mine{};
    int len = 0;
    TPS_CHECK_MPI(MPI_Get_processor_name(mine.data(), &len));
    std::vector<char> all(static_cast<size_t>(size_) * mine.size());
    MPI_Request req;
    TPS_CHECK_MPI(MPI_Iallgather(mine.data(), static_cast<int>(mine.size()), MPI_CHAR, all.data(),
                                 static_cast<int>(mine.size()), MPI_CHAR, MPI_COMM_WORLD, &req));
    rt.hosts.assign(static_cast<size_t>(size_), "?");
    mpi::wait_all(std::span<MPI_Request>(&req, 1), "all-gather", "the ranks' host names at start-up", "the world",
                  rt.deadline);
    for (int r = 0; r < size_; ++r) {
        const char* name = all.data() + static_cast<size_t>(r) * mine.size();
        hosts_.emplace_back(name, strnlen(name, mine.size()));
    }
    rt.hosts = hosts_;
    local_size_ = static_cast<int>(std::count(hosts_.begin(), hosts_.end(), hosts_[static_cast<size_t>(rank_)]));
    local_rank_ = static_cast<int>(std::count(hosts_.begin(), hosts_.begin() + rank_, hosts_[static_cast<size_t>(rank_)]));
    install_signal_handlers();
}

MpiWorld::~MpiWorld() {
    mpi::Runtime& rt = mpi::runtime();
    if (rt.probe != MPI_COMM_NULL) MPI_Comm_free(&rt.probe);
    MPI_Finalize();
}

double MpiWorld::deadline() const noexcept { return mpi::runtime().deadline; }

void MpiWorld::set_deadline(double seconds) {
    TPS_CHECK_AS(UsageError, seconds > 0 && seconds <= 86400, "deadline: {} s is not in (0, 86400]", seconds);
    mpi::runtime().deadline = seconds;
}

void MpiWorld::abort(int exit_code) noexcept {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);  // not reached
}

std::string MpiWorld::describe_rank(int rank) const {
    return fmt::format("rank {} (host {})", rank, host(rank));
}

}  // namespace tps
