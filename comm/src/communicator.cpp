#include "tpserve/comm/communicator.h"

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

}  // namespace tps
