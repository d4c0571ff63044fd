// The MPI world of one tpserve process: MPI initialised with MPI_THREAD_SERIALIZED (rank 0's
// engine loop may run on another thread than main; only one thread talks MPI at a time), errors
// returned instead of aborting, and the machinery that makes failure loud:
//  - every wait polls with a deadline; past it, the rank asks every other rank whether it is
//    alive (a ping on a separate communicator, answered by any rank that is itself waiting) and
//    throws tps::CommError naming the operation, the group and the ranks that did not answer;
//  - SIGTERM / SIGINT / SIGHUP (how mpirun stops the other ranks after one fails) print which
//    operation the rank was in before it exits, so no rank disappears without a word.
// The edges (the launcher's main) turn a CommError into a message and abort(), which ends
// every rank: nothing is left running. mpi.h stays out of this header.
#pragma once

#include "tpserve/comm/communicator.h"

#include <memory>
#include <string>
#include <vector>

namespace tps {

class MpiWorld {
public:
    // Initialises MPI (once per process); sets the error context's rank.
    MpiWorld(int* argc, char*** argv);
    ~MpiWorld();  // MPI_Finalize
    MpiWorld(const MpiWorld&) = delete;
    MpiWorld& operator=(const MpiWorld&) = delete;

    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    const std::string& host(int rank) const { return hosts_.at(static_cast<size_t>(rank)); }
    // Ranks on this rank's host (for splitting the cores between them).
    int local_size() const noexcept { return local_size_; }
    // This rank's place among them, by world rank (the GPU a rank takes on its host).
    int local_rank() const noexcept { return local_rank_; }

    double deadline() const noexcept;
    void set_deadline(double seconds);

    // A communicator over all ranks (its own MPI communicator, so its traffic never mixes with
    // the control channel's).
    std::unique_ptr<Communicator> world(std::string name = "world");
    // Collective over the world: ranks with the same color form a group ordered by key; color < 0
    // gives nullptr (this rank joins no group).
    std::unique_ptr<Communicator> split(int color, int key, std::string name);
    // Rank 0 posts, the others receive.
    std::unique_ptr<ControlChannel> control();

    // For a server's other ranks: the first SIGTERM / SIGINT is noted and ignored (rank 0 shuts
    // the job down in order); a second one ends the rank as before.
    static void defer_stop_signals() noexcept;

    // Ends every rank of the job (MPI_Abort): the last word after a fatal error.
    [[noreturn]] static void abort(int exit_code) noexcept;

    // "rank 3 (host a)"
    std::string describe_rank(int rank) const;

private:
    int rank_ = 0;
    int size_ = 1;
    int local_size_ = 1;
    int local_rank_ = 0;
    std::vector<std::string> hosts_;
};

// What this rank is waiting on right now, for the signal handler's last words ("" when it is
// computing). Set by every communicator wait.
void set_current_operation(std::string_view what) noexcept;

}  // namespace tps
