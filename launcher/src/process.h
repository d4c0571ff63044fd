// Child processes for `tpserve bench`: starting a command with its output in a log file, waiting
// for it with a time limit, and finding the rank 0 process an mpirun started (to stop a server in
// order: a signal to mpirun itself would make it kill every rank within a second).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace tps::cli {

// Starts argv (searched in PATH) with stdout and stderr into `log`, in a process group of its
// own. Errors: tps::UsageError.
pid_t spawn_logged(const std::vector<std::string>& argv, const std::filesystem::path& log);
// Ends the process group spawn_logged made (what is left of a launcher's children included).
void kill_group(pid_t leader) noexcept;
// Its exit status (128 + signal when killed), or nullopt when it is still running after `timeout_s`.
std::optional<int> wait_exit(pid_t pid, double timeout_s);
// The process with OMPI_COMM_WORLD_RANK=0 among the children of `launcher`, if any.
std::optional<pid_t> rank0_of(pid_t launcher);
// The last `bytes` of a file, for error messages.
std::string tail_of(const std::filesystem::path& file, size_t bytes = 1500);

}  // namespace tps::cli
