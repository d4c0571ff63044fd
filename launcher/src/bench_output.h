// What `tpserve bench` writes from its results (bench.json's form, docs/bench.md): the markdown
// table, and the chart (throughput and efficiency against ranks, measured and predicted) drawn by
// gnuplot from a data file and a script written beside it.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace tps::cli {

std::string bench_markdown(const nlohmann::json& results);

// Writes DIR/bench.dat and DIR/bench.gp and runs gnuplot to make DIR/bench.png. Returns "" on
// success, else why there is no chart (gnuplot missing or failing: the JSON and markdown stand).
std::string bench_chart(const nlohmann::json& results, const std::filesystem::path& dir);

}  // namespace tps::cli
