#!/usr/bin/env python3
"""`tpserve check` under mpirun: it lists every rank, times the all-reduce on the world and on each
TP group of a plan, says whether the plan's memory fits, and writes a link profile that `tpserve
plan --link-profile` accepts (the plan then records the measured numbers as its link's source).
Without mpirun it refuses with a usage error. Python standard library only.

usage: check_test.py TPSERVE MPIEXEC [MPIEXEC_FLAGS...]
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LLAMA3 = ROOT / "tests" / "fixtures" / "models" / "llama3"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
failures = []


def check(cond, what, detail=""):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)
        print(detail)


def run(cmd, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def main():
    tpserve, mpiexec, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        alone = run([tpserve, "check"])
        check(alone.returncode == 2 and "mpirun -np N tpserve check" in alone.stderr,
              "without mpirun: a usage error saying how to run it", alone.stderr)

        plan = tmp / "plan.json"
        r = run([tpserve, "plan", "-m", str(LLAMA3), "--gpus", "cpu:64:10:1,cpu:64:10:1,cpu:64:10:1", "--stages", "2,1",
                 "--max-batch", "1", "--max-context", "256", "--out", str(plan), "--json"])
        check(r.returncode == 0, "a 3-rank plan for the check", r.stderr)

        link = tmp / "link.json"
        r = run([mpiexec, *flags, "-np", "3", tpserve, "check", "--plan", str(plan), "-o", str(link), "--repetitions", "3"])
        out = r.stdout
        check(r.returncode == 0, "check under mpirun -np 3 succeeds", r.stdout + r.stderr)
        check("3 ranks on 1 host(s)" in out, "it counts the ranks and hosts", out)
        check(all(f"\n     {k}  " in out for k in range(3)), "a line per rank", out)
        check("all-reduce over world (ranks 0, 1, 2)" in out, "the world's all-reduce is timed", out)
        check("all-reduce over the tp group of stage 0 (ranks 0, 1)" in out, "the plan's TP group is timed", out)
        check("send rank 0 -> rank 1" in out, "the hand-over is timed", out)
        check(out.count(": fits") == 3, "each rank's predicted memory is set against what is free", out)
        check("peer-to-peer" in out, "it says what it knows of peer-to-peer access", out)
        check(link.exists(), "it writes the link profile", out)
        if link.exists():
            profile = json.loads(link.read_text())
            check(profile.get("schema") == "tpserve.link/1" and profile["allreduce"]["bus_bandwidth_gbs"] > 0
                  and profile["send"]["bandwidth_gbs"] > 0, "the profile has the schema and positive bandwidths",
                  link.read_text())
            r = run([tpserve, "plan", "-m", str(LLAMA3), "--gpus", "cpu:64:10:1,cpu:64:10:1", "--link-profile", str(link),
                     "--json"])
            check(r.returncode == 0, "tpserve plan accepts the measured profile", r.stderr)
            if r.returncode == 0:
                src = json.loads(r.stdout)["link"]["source"]
                check("measured by tpserve check on 3 ranks" in src, "the plan records where its link came from", src)
        bad = run([mpiexec, *flags, "-np", "2", tpserve, "check", "--plan", str(plan), "-o", str(tmp / "x.json")])
        check(bad.returncode != 0 and "the plan is for 3 ranks but 2 were started" in bad.stderr,
              "a plan for another world size is refused", bad.stderr)
    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
