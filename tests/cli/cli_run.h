// Runs the tpserve binary for the CLI tests: exit code, stdout and stderr.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace tps::test {

namespace fs = std::filesystem;

struct Outcome {
    int code = -1;
    std::string out;
    std::string err;
};

inline std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline Outcome tpserve(const std::string& args) {
    // ctest runs tests in parallel processes: the files are per process
    const fs::path dir = fs::temp_directory_path();
    const std::string tag = std::to_string(::getpid());
    const fs::path out = dir / ("tps-cli-" + tag + ".out");
    const fs::path err = dir / ("tps-cli-" + tag + ".err");
    // a command that should fail at once but does not (a server that starts) is stopped after
    // 120 s and ends with timeout's 124, not a hung test
    const std::string cmd = "timeout -k 5 120 " + std::string(TPSERVE_BIN) + " " + args + " >" + out.string() + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    Outcome r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    fs::remove(out);
    fs::remove(err);
    return r;
}

inline bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

inline int lines(const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
}

}  // namespace tps::test
