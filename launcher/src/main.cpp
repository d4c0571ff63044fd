// tpserve's entry point: picks the subcommand and applies the one error policy at the edge —
// usage errors exit 2, every other tps::Error exits 1, each as one line on stderr.
#include "cli.h"
#include "commands.h"
#include "mpi_session.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

struct Subcommand {
    const char* name;
    const char* summary;
    int (*run)(int, char**);
};

constexpr Subcommand kCommands[] = {
    {"plan", "plan how to split a model across cards (tensor/pipeline parallel, memory bands)", tps::cli::run_plan},
    {"generate", "generate text from a prompt on this machine's CPU (streams to stdout; split under mpirun)",
     tps::cli::run_generate},
    {"serve", "serve a model over HTTP with the OpenAI API (split under mpirun; docs/api.md)", tps::cli::run_serve},
    {"bench", "measure scaling from one rank to several, beside the cost model (docs/bench.md)", tps::cli::run_bench},
    {"check", "preflight under mpirun: ranks, devices, free memory, peer access, measured links", tps::cli::run_check},
};

void print_help() {
    std::string s = "tpserve " TPS_VERSION " - serve LLMs that fit on no single GPU\n\n"
                    "usage: tpserve <command> [flags]    (tpserve <command> --help for its flags)\n\ncommands:\n";
    for (const auto& c : kCommands) s += fmt::format("  {:<10} {}\n", c.name, c.summary);
    std::fputs(s.c_str(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace tps::cli;
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
        std::strcmp(argv[1], "help") == 0) {
        print_help();
        return argc < 2 ? kExitUsage : kExitOk;
    }
    if (std::strcmp(argv[1], "--version") == 0) {
        std::puts("tpserve " TPS_VERSION);
        return kExitOk;
    }
    const Subcommand* cmd = nullptr;
    for (const auto& c : kCommands) {
        if (std::strcmp(argv[1], c.name) == 0) cmd = &c;
    }
    if (!cmd) {
        std::fprintf(stderr, "tpserve: unknown command '%s' (see tpserve --help)\n", argv[1]);
        return kExitUsage;
    }
    // The subcommand sees "tpserve <name>" as its program name.
    std::string prog = std::string("tpserve ") + cmd->name;
    argv[1] = prog.data();
    int code = kExitOk;
    // under MPI, each line says which rank wrote it
    auto who = [&] {
        const tps::MpiWorld* w = mpi_world_if_started();
        return w && w->size() > 1 ? fmt::format("tpserve {} (rank {} of {})", cmd->name, w->rank(), w->size())
                                  : fmt::format("tpserve {}", cmd->name);
    };
    try {
        code = cmd->run(argc - 1, argv + 1);
    } catch (const tps::UsageError& e) {
        std::fprintf(stderr, "%s: %s (see tpserve %s --help)\n", who().c_str(), e.what(), cmd->name);
        code = kExitUsage;
    } catch (const tps::Error& e) {
        std::fprintf(stderr, "%s: error: %s\n", who().c_str(), e.what());
        code = kExitError;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", who().c_str(), e.what());
        code = kExitError;
    }
    // An error the other ranks do not know about would leave them waiting: end the whole job.
    if (const tps::MpiWorld* w = mpi_world_if_started(); w && w->size() > 1 && code != kExitOk && !error_is_agreed()) {
        tps::MpiWorld::abort(code);
    }
    finish_mpi();
    return code;
}
