// The MPI world of the tests under tests/mpi (one per process, made by mpi_test_main.cpp), and
// the deadline tests run with (TPS_TEST_DEADLINE seconds, default 30): a broken test fails in
// seconds instead of hanging.
#pragma once

#include "tpserve/comm/mpi_world.h"

namespace tps::testing {

MpiWorld& mpi();
double test_deadline();

// Sets the rank's deadline for the scope, then restores the test deadline.
struct ScopedDeadline {
    explicit ScopedDeadline(double seconds) { mpi().set_deadline(seconds); }
    ~ScopedDeadline() { mpi().set_deadline(test_deadline()); }
};

}  // namespace tps::testing
