#include "tpserve/comm/communicator.h"

#include "tpserve/common/error.h"

#include <fmt/format.h>

#include <thread>

namespace tps {

std::string_view comm_op_name(CommOp op) noexcept {
    switch (op) {
        case CommOp::all_reduce: return "all-reduce";
        case CommOp::all_gather: return "all-gather";
        case CommOp::broadcast: return "broadcast";
        case CommOp::send: return "send";
        case CommOp::recv: return "receive";
        case CommOp::barrier: return "barrier";
    }
    return "?";
}

double CommStats::total_seconds() const noexcept {
    double t = 0;
    for (double s : seconds) t += s;
    return t;
}

void CommStats::add(CommOp op, double s, int64_t b) noexcept {
    const auto i = static_cast<size_t>(op);
    ++calls[i];
    seconds[i] += s;
    bytes[i] += b;
}

double Communicator::deadline_seconds() const noexcept { return kDefaultDeadlineSeconds; }

void Communicator::wait_until(const std::function<bool()>& ready, std::string_view op, std::string_view what) {
    const auto start = std::chrono::steady_clock::now();
    for (int64_t polls = 0; !ready(); ++polls) {
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (waited > deadline_seconds()) {
            throw CommError(fmt::format("{} ({}) in {}: no progress within the deadline of {} s", op, what, name(),
                                        deadline_seconds()));
        }
        // spin first, then yield, then sleep briefly
        if (polls > 20000) {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        } else if (polls > 1000) {
            std::this_thread::yield();
        }
    }
}

}  // namespace tps
