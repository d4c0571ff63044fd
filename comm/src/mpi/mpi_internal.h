// What the MPI implementation files share: the status check, the process-wide runtime (the
// probe communicator, the deadline, the hosts) and the deadline-bounded wait every call uses.
#pragma once

#include "tpserve/common/error.h"

#include <mpi.h>

#include <functional>
#include <span>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tps::mpi {

std::string error_string(int code);

#define TPS_CHECK_MPI(stmt) \
    TPS_CHECK_STATUS_(::tps::ErrorKind::comm, "MPI", stmt, tps_status_ == MPI_SUCCESS, ::tps::mpi::error_string)

struct Runtime {
    int rank = 0;
    int size = 1;
    double deadline = 60.0;
    MPI_Comm probe = MPI_COMM_NULL;  // liveness pings, never mixed with data
    std::vector<std::string> hosts;
};
Runtime& runtime();

// Answers other ranks' liveness pings (called from every wait loop).
void service_probes();

// Polls `ready` until it returns true: spinning first, then yielding, then sleeping briefly,
// answering liveness pings all along (and calling `idle`, when given, every few hundred polls).
// Past the deadline: asks everyone whether they are alive and throws CommError naming the
// operation, the group and the ranks that did not answer.
void poll_until(const std::function<bool()>& ready, std::string_view op, std::string_view what, std::string_view group,
                double deadline_s, const std::function<void()>& idle = {});

// Waits for `requests` to complete (MPI_Testall) with poll_until.
void wait_all(std::span<MPI_Request> requests, std::string_view op, std::string_view what, std::string_view group,
              double deadline_s, MPI_Status* statuses = MPI_STATUSES_IGNORE);

// Receives the next message from `peer` with `tag`, whatever its length: a matched probe with the
// deadline (MPI_Improbe, so no other receive can take it), then the receive itself, also with the
// deadline (MPI_Imrecv: a large message needs its sender to make progress).
std::vector<uint8_t> receive_matched(MPI_Comm comm, int peer, int tag, std::string_view op, std::string_view what,
                                     std::string_view group, const std::function<void()>& idle);

// Builds the timeout error (after pinging every rank for two seconds).
[[noreturn]] void timed_out(std::string_view op, std::string_view what, std::string_view group, double seconds);

}  // namespace tps::mpi
