#include "bench_output.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <map>

namespace tps::cli {
namespace {

using nlohmann::json;

std::string num(const json& v, const char* f = "{:.1f}") {
    return v.is_null() ? std::string("-") : fmt::format(fmt::runtime(f), v.get<double>());
}

std::string pct(const json& v) { return v.is_null() ? std::string("-") : fmt::format("{:+.0f}%", v.get<double>() * 100); }

std::string ms(const json& seconds) { return seconds.is_null() ? std::string("-") : fmt::format("{:.3f}", seconds.get<double>() * 1e3); }

// A table cell: '|' (in plan names such as pp2[tp1 | tp2]) escaped.
std::string cell(const json& v) {
    std::string out;
    for (const char c : v.get<std::string>()) {
        if (c == '|') out += '\\';
        out += c;
    }
    return out;
}

std::string share(const json& v) { return v.is_null() ? std::string("-") : fmt::format("{:.1f}%", v.get<double>() * 100); }

std::string mib(double bytes) { return fmt::format("{:.1f}", bytes / 1048576.0); }

}  // namespace

std::string bench_markdown(const json& r) {
    const bool measured = r["mode"] == "measured";
    const auto& w = r["workload"];
    std::string out = fmt::format("# tpserve bench: {} ({}) on {}\n\n", r["model"].get<std::string>(),
                                  r.value("weight_format", std::string("?")), r["devices"].get<std::string>());
    out += measured ? (r.value("path", "engine") == "http"
                           ? "**Measured** on this machine, through the HTTP server (`tpserve serve`, one streaming client per sequence)"
                           : "**Measured** on this machine")
                    : "**Predicted by the cost model, not measured** (no run on these cards)";
    out += fmt::format(" ({}, {} CPUs). Workload: prompt {} tokens, {} tokens decoded per sequence, batches ",
                       r["date"].get<std::string>(), r["host_cpus"].get<int>(), w["prompt_tokens"].get<int64_t>(),
                       w["decode_tokens"].get<int64_t>());
    for (size_t i = 0; i < w["batches"].size(); ++i) out += (i ? ", " : "") + std::to_string(w["batches"][i].get<int64_t>());
    out += fmt::format(". Calibration: {}.\n\n", r["calibration"].get<std::string>());

    out += measured ? "| ranks | shape | plan | batch | tok/s | predicted | deviation | calibrated | ms/token | predicted | "
                      "speedup | efficiency | in collectives | idle |\n"
                      "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
                    : "| ranks | shape | plan | batch | tok/s (predicted) | ms/token (predicted) | speedup | efficiency |\n"
                      "|---:|---|---|---:|---:|---:|---:|---:|\n";
    bool oversubscribed = false;
    for (const auto& p : r["points"]) {
        const std::string ranks = std::to_string(p["ranks"].get<int>()) + (p["oversubscribed"] == true ? "*" : "");
        oversubscribed = oversubscribed || p["oversubscribed"] == true;
        if (p["feasible"] != true) {
            out += fmt::format("| {} | {} | - | - | no plan: {} |\n", ranks, p["shape"].get<std::string>(), cell(p["why_not"]));
            continue;
        }
        for (const auto& b : p["batches"]) {
            const std::string flag = b.value("flagged", false) ? " **!**" : "";
            const std::string side = measured ? "measured" : "predicted";
            if (measured) {
                out += fmt::format("| {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} |\n", ranks,
                                   p["shape"].get<std::string>(), cell(p["plan"]), b["batch"].get<int64_t>(),
                                   num(b["tokens_per_s"]["measured"]), num(b["tokens_per_s"]["predicted"]),
                                   pct(b.value("deviation", json())), flag, num(b["tokens_per_s"].value("calibrated", json())),
                                   num(b["time_per_token_ms"]["measured"], "{:.2f}"),
                                   num(b["time_per_token_ms"]["predicted"], "{:.2f}"), num(b["speedup"][side], "{:.2f}x"),
                                   num(b["efficiency"][side], "{:.2f}"), share(b.value("collective_fraction", json())),
                                   share(b.value("idle_fraction", json())));
            } else {
                out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", ranks, p["shape"].get<std::string>(),
                                   cell(p["plan"]), b["batch"].get<int64_t>(), num(b["tokens_per_s"]["predicted"]),
                                   num(b["time_per_token_ms"]["predicted"], "{:.2f}"), num(b["speedup"][side], "{:.2f}x"),
                                   num(b["efficiency"][side], "{:.2f}"));
            }
        }
    }
    if (!r["baseline_ranks"].is_null() && r["baseline_ranks"] != 1) {
        out += fmt::format("\nOne rank cannot hold the model: speedup is against {} ranks, the fewest that can, and "
                           "efficiency is speedup x {} / ranks.\n",
                           r["baseline_ranks"].get<int>(), r["baseline_ranks"].get<int>());
    }
    if (measured) {
        out += "\n\"calibrated\": the cost model scaled by the one-rank measurement at the same batch (measured / "
               "predicted at 1 rank), so only the model's scaling is left to judge.\n";
    }
    if (oversubscribed) out += "\n\\* more ranks than this machine has CPUs: the ranks share cores (oversubscribed).\n";

    out += fmt::format("\nPrefill of one {}-token prompt:\n\n| ranks | shape | measured ms | predicted ms | deviation |\n"
                       "|---:|---|---:|---:|---:|\n",
                       w["prompt_tokens"].get<int64_t>());
    for (const auto& p : r["points"]) {
        if (p["feasible"] != true) continue;
        const auto& pre = p["prefill_s"];
        out += fmt::format("| {} | {} | {} | {} | {} |\n", p["ranks"].get<int>(), p["shape"].get<std::string>(),
                           ms(pre["measured"]), ms(pre["predicted"]), pct(pre.value("deviation", json())));
    }
    if (measured) {
        out += "\nMemory per rank (MiB), measured against the plan:\n\n| ranks | shape | rank | weights | kv cache | "
               "activations | total | plan's total | deviation |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for (const auto& p : r["points"]) {
            if (!p.contains("memory")) continue;
            for (const auto& m : p["memory"]) {
                out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", p["ranks"].get<int>(), p["shape"].get<std::string>(),
                                   m["rank"].get<int>(), mib(m["actual"]["weights"].get<double>()),
                                   mib(m["actual"]["kv_cache"].get<double>()), mib(m["actual"]["activations"].get<double>()),
                                   mib(m["actual"]["total"].get<double>()), mib(m["predicted"]["total"].get<double>()),
                                   pct(m["deviation"]));
            }
        }
    }
    if (!r["flags"].empty()) {
        out += fmt::format("\nMeasured and predicted differ by more than 25% (**!**):\n\n");
        for (const auto& f : r["flags"]) out += "- " + f.get<std::string>() + "\n";
    }
    return out;
}

std::string bench_chart(const json& r, const std::filesystem::path& dir) {
    const bool measured = r["mode"] == "measured";
    // one data block per batch size: ranks, tok/s measured, predicted, efficiency measured, predicted
    // (the planner's own shape only, so each line is one path through world sizes)
    std::ofstream dat(dir / "bench.dat");
    const auto& batches = r["workload"]["batches"];
    for (size_t i = 0; i < batches.size(); ++i) {
        dat << "# batch " << batches[i].get<int64_t>() << "\n";
        for (const auto& p : r["points"]) {
            if (p["shape"] != "auto" || p["feasible"] != true) continue;
            const auto& b = p["batches"][i];
            auto v = [](const json& x) { return x.is_null() ? std::string("NaN") : fmt::format("{}", x.get<double>()); };
            dat << p["ranks"].get<int>() << ' ' << v(b["tokens_per_s"]["measured"]) << ' ' << v(b["tokens_per_s"]["predicted"])
                << ' ' << v(b["efficiency"]["measured"]) << ' ' << v(b["efficiency"]["predicted"]) << '\n';
        }
        dat << "\n\n";
    }
    dat.close();
    std::string labels;
    for (size_t i = 0; i < batches.size(); ++i) labels += (i ? ", " : "") + std::to_string(batches[i].get<int64_t>());
    std::ofstream gp(dir / "bench.gp");
    gp << "# made by tpserve bench: gnuplot bench.gp (in this folder) draws bench.png from bench.dat\n"
       << "set terminal pngcairo size 1200,520 font ',10' noenhanced\nset output 'bench.png'\n"
       << fmt::format("array B[{}] = [{}]\n", batches.size(), labels)
       << fmt::format("set multiplot layout 1,2 title '{} on {}: {} (dashed: the cost model{})'\n", r["model"].get<std::string>(),
                      r["devices"].get<std::string>(), measured ? "measured" : "predicted",
                      measured ? "" : "; nothing measured")
       << "set grid\nset key below\nset xlabel 'ranks'\nset logscale x 2\nset xtics (1, 2, 4, 8, 16)\n"
       << "set ylabel 'decode tokens/s'\n";
    const std::string measured_lines =
        measured ? fmt::format("for [i=1:{}] 'bench.dat' index i-1 using 1:2 with linespoints lw 2 pt 7 lc i title sprintf('batch %d', B[i]), ",
                               batches.size())
                 : "";
    gp << "plot " << measured_lines
       << fmt::format("for [i=1:{}] 'bench.dat' index i-1 using 1:3 with linespoints dt 2 pt 6 lc i title sprintf('batch %d predicted', B[i])\n",
                      batches.size())
       << "set ylabel 'efficiency (speedup / ranks)'\nset yrange [0:1.2]\n";
    const std::string measured_eff =
        measured ? fmt::format("for [i=1:{}] 'bench.dat' index i-1 using 1:4 with linespoints lw 2 pt 7 lc i title sprintf('batch %d', B[i]), ",
                               batches.size())
                 : "";
    gp << "plot " << measured_eff
       << fmt::format("for [i=1:{}] 'bench.dat' index i-1 using 1:5 with linespoints dt 2 pt 6 lc i title sprintf('batch %d predicted', B[i])\n",
                      batches.size())
       << "unset multiplot\n";
    gp.close();
    if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
        return "gnuplot is not installed (scripts/setup installs gnuplot-nox)";
    }
    const std::string cmd = fmt::format("cd '{}' && gnuplot bench.gp > gnuplot.log 2>&1", dir.string());
    if (std::system(cmd.c_str()) != 0) return fmt::format("gnuplot failed; see {}", (dir / "gnuplot.log").string());
    return {};
}

}  // namespace tps::cli
