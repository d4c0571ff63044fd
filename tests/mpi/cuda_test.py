#!/usr/bin/env python3
"""`mpirun tpserve generate --backend cuda`: a model split across GPUs, activations moving through
NCCL on the CUDA backend's stream, writes the text one CPU process writes (greedy), in tensor-
and pipeline-parallel shapes and both together, for a Llama 3, Mixtral and a Q4_K_M GGUF; and a
rank that stops answering mid-generation ends the job within its deadline, named by the others;
`tpserve check --devices gpu` times NCCL between the ranks and writes a link profile that
`tpserve plan` takes; and `tpserve bench --devices cuda` measures 1 and 2 GPU ranks, the cards
described with --gpus.

usage: cuda_test.py TPSERVE MPIEXEC [MPIEXEC_FLAGS...]
Runs where TPS_CUDA_EMULATE is set (the sanitizer build's ctest sets it: every rank a process
with its own emulated device, NCCL between them through shared memory, engine/src/cuda/emu), or
on a machine with three usable GPUs or more (each rank takes one; `nvidia-smi -L` counts them);
exits 77 (skipped) elsewhere. Needs only the Python standard library.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from failure_test import FIXTURES, Job, check, failures, lost_rank_case

PROMPT = "The quick brown fox"


def main():
    tpserve, mpiexec, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
    emulated = bool(os.environ.get("TPS_CUDA_EMULATE"))
    if not emulated:
        probe = subprocess.run([tpserve, "generate", "-m", str(FIXTURES / "llama3"), "-p", "hi", "-n", "1",
                                "--backend", "cuda"], capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            print(f"skipped: no usable GPU ({probe.stderr.strip()})")
            return 77
        try:
            cards = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout.count("GPU ")
        except (OSError, subprocess.TimeoutExpired):
            cards = 0
        if cards < 3:
            print(f"skipped: {cards} GPUs counted by nvidia-smi; the 3-rank shapes need 3")
            return 77

    def gpus(np):
        # the emulated device is in no catalog: described (its memory, 2 GiB, is TPS_CUDA_EMULATE_MIB: the planner counts 0.8 GiB of CUDA context alone)
        return ["--gpus", f"{np}xemulated:2:100:10"] if emulated else []

    models = {"llama3": FIXTURES / "llama3", "mixtral": FIXTURES / "mixtral",
              "Q4_K_M": FIXTURES / "llama3-gguf-q4_k_m" / "llama3-wide-Q4_K_M.gguf"}
    for stages, name in [("2", "llama3"), ("1,1", "llama3"), ("2,1", "llama3"), ("2", "mixtral"), ("1,1", "mixtral"),
                         ("2", "Q4_K_M"), ("2,1", "Q4_K_M")]:
        model = models[name]
        cpu = subprocess.run([tpserve, "generate", "-m", str(model), "-p", PROMPT, "-n", "12"], capture_output=True,
                             text=True, timeout=300)
        np = sum(int(s) for s in stages.split(","))
        job = Job(tpserve, mpiexec, flags, np, ["generate", "-m", str(model), "-p", PROMPT, "-n", "12", "--backend", "cuda",
                                                "--stages", stages, "--deadline", "60", *gpus(np)])
        code, took, _ = job.wait(300)
        left = job.cleanup()
        check(code == 0 and cpu.returncode == 0 and job.stdout() == cpu.stdout and cpu.stdout,
              f"{name} on {np} GPU ranks, stages {stages}: the CPU's text ({took:.1f} s)",
              f"exit {code}\ncuda: {job.stdout()!r}\ncpu:  {cpu.stdout!r}\n{job.stderr()[-3000:]}")
        check(not left, f"{name}, stages {stages}: nothing left running", str(left))

    # a rank stopped mid-generation: its peer's NCCL operation never completes, and the deadline
    # (not a hang) ends the job, naming it, as failure_test holds the CPU ranks to. The
    # collectives are queued with the kernels and waited for at the step's output: a sum in
    # tensor parallelism, the hand-over the last stage receives in pipeline parallelism.
    deadline = 3
    for what, stages, victim in [("rank 1 stopped mid-generation (TP=2 on GPUs)", "2", 1),
                                 ("rank 0 stopped mid-generation (PP=2 on GPUs)", "1,1", 0)]:
        lost_rank_case(tpserve, mpiexec, flags, what, 2, victim, signal.SIGSTOP, deadline,
                       ["generate", "-m", str(models["llama3"]), "-p", PROMPT, "-n", "1000", "--ignore-eos",
                        "--max-context", "1024", "--backend", "cuda", "--stages", stages, "--deadline", str(deadline),
                        *gpus(2)])

    # the preflight on GPUs: NCCL timed on device buffers, the timings gathered over MPI
    with tempfile.TemporaryDirectory() as d:
        link = Path(d) / "link.json"
        job = Job(tpserve, mpiexec, flags, 2, ["check", "--devices", "gpu", "--repetitions", "2", "--out", str(link)])
        code, took, text = job.wait(300)
        job.cleanup()
        check(code == 0 and "one GPU per rank, NCCL between them" in text and "all-reduce over NCCL" in text,
              f"tpserve check --devices gpu on 2 ranks ({took:.1f} s)", text[-3000:])
        profile = json.loads(link.read_text()) if link.exists() else {}
        check("measured by tpserve check on 2 ranks (NCCL)" in profile.get("source", ""),
              "tpserve check --devices gpu: the link profile says it was measured over NCCL", str(profile))
        if link.exists():
            plan = subprocess.run([tpserve, "plan", "-m", str(models["llama3"]), "--gpus", "2xrtx5090", "--link-profile",
                                   str(link)], capture_output=True, text=True, timeout=120)
            check(plan.returncode == 0, "tpserve plan takes the measured link profile", plan.stderr)

        # the scaling benchmark on GPUs (speeds mean nothing on the emulator: only that it runs)
        out = Path(d) / "bench"
        card = "emulated:2:100:10" if emulated else None
        bench = subprocess.run([tpserve, "bench", "--model", str(models["llama3"]), "--devices", "cuda", "--ranks", "1,2",
                                "--shapes", "auto,tp", "--quick", "--out", str(out), "--deadline", "60",
                                *(["--gpus", f"2x{card}"] if card else [])], capture_output=True, text=True, timeout=600)
        doc = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
        measured = [b["tokens_per_s"]["measured"] for p in doc.get("points", []) for b in p.get("batches", [])]
        check(bench.returncode == 0 and len(measured) == 6 and all(m and m > 0 for m in measured),
              f"tpserve bench --devices cuda on 1 and 2 GPU ranks: every point measured ({measured})",
              bench.stderr[-3000:])

    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
