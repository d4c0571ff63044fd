#!/usr/bin/env python3
"""End-to-end tests of `tpserve serve` over HTTP, against the contract in docs/api.md: the official
`openai` client, greedy results equal to `tpserve generate`, raw SSE framing (curl), batching under
mpirun that changes no result, Mixtral on two ranks and K-quant and Qwen2 GGUFs equal to transformers,
the same on the CUDA backend (on the host CUDA emulator in the sanitizer build),
backpressure (429), client disconnects, Prometheus metrics
(promtool), error statuses and bodies, the small endpoints, SIGTERM and --request-timeout,
structured output (judged by the openai client's pydantic parsing, jsonschema and Python's re),
reasoning_content, the API key, vLLM's extra fields.

usage: http_test.py [--only CASE[,CASE...]] TPSERVE MPIEXEC [MPIEXEC_FLAGS...]
       (CASE: a letter a-t or a name: openai, generate, curl, mpi, backpressure, disconnect,
       metrics, errors, endpoints, shutdown, timeout, structured, reasoning, apikey, vllm, responses,
       messages, mixtral, gguf, cuda)
Run it with the project's virtual environment (tests/tools/run_venv_python), which has `openai` and
its HTTP client; curl and promtool (Debian's prometheus) come from scripts/setup. Servers use the
tiny random fixture model (its text is noise, but deterministic). Backpressure, disconnect, shutdown
and the request timeout need generation slower than a client's reaction, so they use the real
SmolLM2-135M from scripts/setup when it is there (the fixture makes 200 tokens in milliseconds).
Prints ok:/FAIL: lines; exits 1 if any check failed.
This file is the entry point; the machinery is in harness.py, the cases in cases_api.py,
cases_serving.py and cases_structured.py.
"""
import sys
import time
import traceback

from cases_api import case_curl, case_endpoints, case_errors, case_generate, case_metrics, case_openai
from cases_messages import case_messages
from cases_responses import case_responses
from cases_serving import (case_api_key, case_backpressure, case_cuda, case_disconnect, case_gguf, case_mixtral, case_mpi,
                           case_shutdown, case_timeout)
from cases_structured import case_reasoning, case_structured
from cases_vllm import case_vllm_fields
from harness import cfg, check, failures, servers


CASES = [("a", "openai", case_openai), ("b", "generate", case_generate), ("c", "curl", case_curl),
         ("i", "endpoints", case_endpoints), ("h", "errors", case_errors), ("g", "metrics", case_metrics),
         ("l", "structured", case_structured), ("m", "reasoning", case_reasoning), ("n", "apikey", case_api_key),
         ("o", "vllm", case_vllm_fields), ("p", "responses", case_responses),
         ("q", "messages", case_messages),
         ("e", "backpressure", case_backpressure), ("f", "disconnect", case_disconnect),
         ("j", "shutdown", case_shutdown), ("k", "timeout", case_timeout), ("d", "mpi", case_mpi),
         ("r", "mixtral", case_mixtral), ("s", "gguf", case_gguf), ("t", "cuda", case_cuda)]


def main():
    args = sys.argv[1:]
    only = None
    if args[:1] == ["--only"]:
        only, args = args[1], args[2:]
    if len(args) < 2:
        print(__doc__)
        return 2
    cfg.tpserve, cfg.mpiexec, cfg.mpi_flags = args[0], args[1], args[2:]
    wanted = None if only is None else only.split(",")
    unknown = [w for w in wanted or [] if not any(w in (c[0], c[1]) for c in CASES)]
    if unknown:
        print(f"unknown case {unknown[0]!r}; one of {', '.join(c[1] for c in CASES)}")
        return 2
    chosen = [c for c in CASES if wanted is None or c[0] in wanted or c[1] in wanted]
    t0 = time.monotonic()
    try:
        for letter, name, fn in chosen:
            t = time.monotonic()
            print(f"== {letter}. {name}", flush=True)
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - one broken case must not hide the others
                check(False, f"{name}: ran without an exception ({e!r})", traceback.format_exc())
            print(f"   ({time.monotonic() - t:.1f} s)", flush=True)
    finally:
        for s in servers:
            s.kill()
    if failures:
        for s in servers:
            print(f"\n--- server output {s.log(6000)}")
        print(f"{len(failures)} checks failed ({time.monotonic() - t0:.0f} s)")
        return 1
    print(f"all checks passed ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
