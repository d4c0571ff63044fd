// The communicators a rank's part of a plan needs, made together (collective over the world):
// its stage's tensor-parallel group (ordered by tp rank; none when the stage has TP = 1) and the
// hand-over groups joining its stage with the previous and the next one (the two stages' ranks in
// rank order; none at the ends of the pipeline). NCCL hand-overs need such groups: a NCCL
// communicator spans exactly the ranks that talk through it.
#pragma once

#include "tpserve/comm/communicator.h"
#include "tpserve/comm/mpi_world.h"
#include "tpserve/comm/parallel_mapping.h"

#include <memory>

namespace tps {

struct StageGroups {
    std::unique_ptr<Communicator> tp;
    std::unique_ptr<Communicator> from_prev;  // stages s-1 and s
    std::unique_ptr<Communicator> to_next;    // stages s and s+1
};

StageGroups make_stage_groups(MpiWorld& mpi, const ParallelMapping& map);

}  // namespace tps
