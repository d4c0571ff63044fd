// The subcommands of `tpserve`. Each takes its own argv (argv[0] is "tpserve <name>") and
// returns an exit code; errors leave as tps exceptions for main() to report.
#pragma once

namespace tps::cli {

int run_plan(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_check(int argc, char** argv);
int run_serve(int argc, char** argv);
int run_bench(int argc, char** argv);

}  // namespace tps::cli
