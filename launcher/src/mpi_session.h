// The launcher's side of running under mpirun: whether this process was started by an MPI
// launcher, the one MpiWorld of the process (created on first use, finalised by main), start-up
// steps every rank must pass together, and how main ends a rank after an error.
#pragma once

#include "tpserve/comm/mpi_world.h"

#include <functional>
#include <string>
#include <string_view>

namespace tps::cli {

// True when an MPI launcher started this process (Open MPI, MPICH/Hydra or PMIx variables).
bool launched_by_mpi();

// The process's MPI world, initialised on first call.
MpiWorld& mpi_world();
// nullptr until mpi_world() was called.
MpiWorld* mpi_world_if_started() noexcept;
// MPI_Finalize (when started). main calls it on the way out.
void finish_mpi() noexcept;

// Runs `step` on every rank and compares outcomes: if any rank failed, every rank throws (the
// failing ones their own error, the others an error naming the first failed rank and its
// message), so all ranks leave together with a clear line instead of some waiting for ever.
// Waits for the slowest rank up to `deadline_s`.
void agree(Communicator& world, std::string_view what, const std::function<void()>& step, double deadline_s);

// Set when every rank knows about the error being thrown (so main can finalise normally rather
// than abort the job).
bool error_is_agreed() noexcept;

// A string that only rank 0 has, broadcast to every rank.
std::string broadcast_string(Communicator& world, std::string text, std::string_view what);

}  // namespace tps::cli
