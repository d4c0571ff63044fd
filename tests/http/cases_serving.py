"""The serving-behaviour cases of the HTTP end-to-end test (http_test.py): how the server behaves under
load and at its edges. Batching under mpirun that changes no result (and SIGTERM to every rank),
backpressure (429), client disconnects, SIGTERM in one process, --request-timeout.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai

from harness import (FIXTURE, REAL, SMALL, Server, cfg, check, check_error, check_plan, client, completion_bytes,
                     drop_shared, error_body, marked, metric, metrics, rank_pids, raw, read_response,
                     reference_scores, short, slow_server, stream, tokenize)


# ---------------------------------------------------------------- d. batching under mpirun, SIGTERM


def mpi_prompts(srv):
    words = ("harbour", "engine", "copper", "winter", "lantern", "river", "orchard", "signal")
    out = []
    for i in range(32):
        p = f"Note {i}: the {words[i % 8]} and the {words[(i * 3) % 8]} were"
        if i % 8 == 3:  # a few prompts longer than one prefill chunk (64 tokens), all within 200
            base = p
            while tokenize(srv, p)["count"] <= 80:
                p += " " + base
        out.append(p)
    return out


def case_mpi():
    srv = Server(["--model", str(FIXTURE), *SMALL, "--gpus", "2xcpu", "--deadline", "30"], np=2)
    if not srv.start():
        srv.kill()
        return
    try:
        mpi_run(srv)
    finally:
        srv.kill()


def case_mixtral():
    """Mixtral (a mixture of experts) served by two ranks (tensor parallel): every prompt of its
    fixture's reference.json, greedy, gives the continuation transformers gave."""
    served_as_transformers(FIXTURE.parent / "mixtral", "Mixtral", 2)


def case_gguf():
    """llama.cpp's files as people download them: a Q4_K_M GGUF (q4_k + q6_k) served by two ranks,
    and a Qwen2 GGUF (q5_0, biases, tied q8_0 embedding) by one: every prompt of their
    reference.json, greedy, gives the continuation transformers gave."""
    served_as_transformers(FIXTURE.parent / "llama3-gguf-q4_k_m", "Q4_K_M GGUF", 2, "llama3-wide-Q4_K_M.gguf")
    served_as_transformers(FIXTURE.parent / "qwen2-gguf-q5_0", "Qwen2 GGUF", 1, "qwen2-tiny-Q5_0.gguf")


def case_cuda():
    """The CUDA backend behind the server (`--backend cuda`, one rank; in the sanitizer build on the
    host CUDA emulator, which ctest makes visible with TPS_CUDA_EMULATE=1): a Q4_K_M GGUF and
    Mixtral, every reference prompt sent at once (batched decode steps, replayed as CUDA graphs for
    the GGUF), greedy, give transformers' continuations; and, on the emulator, the GGUF split over
    two GPU ranks (tensor parallel, NCCL between them through shared memory) likewise. Skipped
    where no GPU is usable."""
    emulated = os.environ.get("TPS_CUDA_EMULATE") == "1"
    if not emulated:
        probe = subprocess.run([cfg.tpserve, "generate", "-m", str(FIXTURE), "-p", "hi", "-n", "1", "--backend", "cuda"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            print(f"note: cuda skipped, no usable GPU: {probe.stderr.strip()}")
            return
    # the emulated device is in no catalog: described (its memory is TPS_CUDA_EMULATE_MIB, 2 GiB: the planner counts 0.8 GiB of CUDA context alone)
    def gpus(np):
        return ["--gpus", f"{np}xemulated:2:100:10"] if emulated else []

    gguf = (FIXTURE.parent / "llama3-gguf-q4_k_m", "Q4_K_M GGUF", "llama3-wide-Q4_K_M.gguf")
    for folder, label, file in (gguf, (FIXTURE.parent / "mixtral", "Mixtral", None)):
        served_as_transformers(folder, f"{label} on the CUDA backend", 1, file, ["--backend", "cuda", *gpus(1)],
                               concurrent=True)
    if emulated:  # (a machine's real GPUs may be one)
        folder, label, file = gguf
        served_as_transformers(folder, f"{label} on the CUDA backend", 2, file,
                               ["--backend", "cuda", "--stages", "2", *gpus(2)], concurrent=True)


def served_as_transformers(folder, label, np, file=None, serve_args=None, concurrent=False):
    """`folder`'s model (or its GGUF `file`) served by `np` ranks (on CPUs, or as `serve_args`
    say): the greedy tokens of every reference prompt (fed as ids; one after another, or all at
    once) are the reference's."""
    model = folder / file if file else folder
    where = serve_args if serve_args is not None else ["--gpus", f"{np}xcpu"]
    srv = Server(["--model", str(model), *SMALL, *where, "--deadline", "30"], np=np)
    if not srv.start():
        srv.kill()
        return
    try:
        ref = json.loads((folder / "reference.json").read_text())
        with client() as c:
            plan = c.get(srv.url + "/v1/plan").json()

            def greedy(p):
                r = c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": p["input_ids"], "temperature": 0,
                                                            "max_tokens": p["greedy"]["max_new_tokens"], "ignore_eos": True,
                                                            "logprobs": 0, "return_tokens_as_token_ids": True}).json()
                return [int(t.split(":")[1]) for t in r["choices"][0]["logprobs"]["tokens"]]

            if concurrent:
                with ThreadPoolExecutor(len(ref["prompts"])) as pool:
                    got = list(pool.map(greedy, ref["prompts"]))
            else:
                got = [greedy(p) for p in ref["prompts"]]
            want = [p["greedy"]["ids"] for p in ref["prompts"]]
        stages = [(st.get("tp"), st.get("layers")) for st in plan.get("stages", [])]
        check(got == want, f"{label} on {np} rank{'s' if np > 1 else ''} (stages {stages}): every reference prompt's "
                           "greedy tokens are transformers'", short([got, want]))
    finally:
        srv.kill()


def mpi_run(srv):
    with client() as c:
        plan = c.get(srv.url + "/v1/plan").json()
    shape = [(s.get("tp"), s.get("layers")) for s in plan.get("stages", [])]
    print(f"note: mpirun -np 2 plan: stages (tp, layers) {shape}")
    check_plan(srv, plan, 2, "mpirun -np 2")

    prompts = mpi_prompts(srv)
    print(f"note: prompts of {min(tokenize(srv, p)['count'] for p in prompts)} to "
          f"{max(tokenize(srv, p)['count'] for p in prompts)} tokens")
    bodies = [{"model": srv.model, "prompt": p, "max_tokens": 16 + i % 9, "temperature": 0, "ignore_eos": True,
               "logprobs": 1, "stream_options": {"include_usage": True}} for i, p in enumerate(prompts)]
    barrier = threading.Barrier(len(bodies))

    def one(body):
        with client(120) as c:
            barrier.wait(timeout=60)
            return stream(srv, "/v1/completions", body, c=c)

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(one, bodies))
    took = time.monotonic() - t0
    good = [s.status == 200 and s.done and s.finish_reasons() == ["length"]
            and (s.usage() or {}).get("completion_tokens") == b["max_tokens"] for s, b in zip(together, bodies)]
    check(all(good), f"mpirun: 32 concurrent streams all complete with 200, finish length, max_tokens tokens "
          f"({took:.1f} s)", "\n".join(f"{i}: {s.status} {short(s.body, 400)}" for i, (s, g)
                                       in enumerate(zip(together, good)) if not g) + "\n" + srv.log())
    same_text = same_tokens = 0
    worst = 0.0
    diffs = []
    for i, (s, b) in enumerate(zip(together, bodies)):
        alone = stream(srv, "/v1/completions", b)
        ta, la = alone.logprob_tokens()
        tt, lt = s.logprob_tokens()
        same_text += alone.text() == s.text()
        same_tokens += ta == tt and len(ta) == b["max_tokens"]
        if alone.text() != s.text() or ta != tt:
            diffs.append(f"prompt {i}: together {s.text()!r} {tt}\n          alone    {alone.text()!r} {ta}")
        if len(la) == len(lt):
            worst = max([worst] + [abs(x - y) for x, y in zip(la, lt)])
    check(same_text == 32, f"mpirun: each prompt alone gives the text it gave in the batch ({same_text}/32)",
          "\n".join(diffs[:8]))
    check(same_tokens == 32, f"mpirun: and the same logprobs tokens ({same_tokens}/32)", "\n".join(diffs[:8]))
    check(worst < 1e-4, f"mpirun: and the same logprobs (largest difference {worst:.2e})")
    hits = metric(metrics(srv)[1], "tpserve_prefix_cache_hits_total")
    check(hits is not None and hits > 0, f"mpirun: the prompts run alone again reused the batch's cached prefixes "
          f"on both ranks ({hits} prompt tokens not prefilled)")

    # n=4 under mpirun: each choice is what n=1 gives with its seed (the request's + its index), and
    # the other three start on the first one's prompt blocks on both ranks
    fresh = "Choices, four of them, read from the harbour log: " + ", ".join(f"barrel {i} of tar" for i in range(9))
    n_fresh = tokenize(srv, fresh)["count"]
    ask = {"model": srv.model, "prompt": fresh, "max_tokens": 10, "temperature": 0.9, "ignore_eos": True}
    before = metric(metrics(srv)[1], "tpserve_prefix_cache_hits_total") or 0
    with client(120) as c:
        four = c.post(srv.url + "/v1/completions", json={**ask, "n": 4, "seed": 11}).json()
        after = metric(metrics(srv)[1], "tpserve_prefix_cache_hits_total") or 0
        singles = [c.post(srv.url + "/v1/completions", json={**ask, "seed": 11 + i}).json() for i in range(4)]
    texts = [x.get("text") for x in four.get("choices", [])]
    want = (n_fresh - 1) // 16 * 16
    check(len(texts) == 4 and texts == [x["choices"][0]["text"] for x in singles if x.get("choices")],
          "mpirun n=4: each choice is the n=1 answer with seed 11 + its index", short([four, singles]))
    check(after - before >= 3 * want, f"mpirun n=4: the other choices start on the first one's {want} prompt tokens "
          f"(prefix cache hits {before:g} -> {after:g})")

    # echo with logprobs under mpirun: the logits of every prompt position come from the split
    # model, and still give transformers' log-probabilities
    ids, want, _ = reference_scores("long")
    with client(120) as c:
        r = c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": ids, "max_tokens": 0, "echo": True,
                                                      "logprobs": 1}).json()
    got = ((r.get("choices") or [{}])[0].get("logprobs") or {}).get("token_logprobs") or []
    worst = max(abs(a - b) for a, b in zip(got[1:], want[1:])) if len(got) == len(ids) else 1
    check(len(got) == len(ids) and got[0] is None and worst < 1e-4,
          f"mpirun: echo scores the {len(ids)}-token prompt as transformers does (largest difference {worst:.1e})",
          short(r))

    # structured output under mpirun: the constraint masks the logits gathered on rank 0
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
              "required": ["ok", "n"]}
    with client(120) as c:
        r = c.post(srv.url + "/v1/chat/completions", json={
            "model": srv.model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 60, "temperature": 1.0,
            "seed": 4, "n": 3, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}).json()
    outs = [ch["message"]["content"] for ch in r.get("choices", [])]
    parsed = []
    for o in outs:
        try:
            parsed.append(json.loads(o))
        except ValueError:
            parsed.append(None)
    check(len(outs) == 3 and all(isinstance(p, dict) and set(p) == {"ok", "n"} for p in parsed),
          "mpirun: json_schema output of each of 3 choices parses and has the schema's fields", short(r))

    # rank 1's figures reach /metrics (collected at most every 5 s)
    end = time.monotonic() + 12
    while True:
        _, m = metrics(srv)
        ok = all(metric(m, name, rank="1") is not None for name in ("tpserve_step_seconds_total",
                                                                    "tpserve_rank_memory_bytes"))
        if ok or time.monotonic() > end:
            break
        time.sleep(0.5)
    check(ok, "mpirun: /metrics has rank 1's step time and memory", short(metrics(srv)[0].text, 3000))

    # SIGTERM while a stream runs. mpirun itself cannot take it: Open MPI's mpirun answers SIGTERM by
    # killing its ranks (SIGKILL a second later) and exiting 1 whatever they do, so every rank gets it,
    # as from a process-group or container stop; the server must finish the stream and exit 0 everywhere.
    pids = rank_pids(srv.mark)
    check(set(pids) == {0, 1}, f"mpirun: found both ranks' processes ({pids})")
    started = threading.Event()
    box = {}

    def signal_ranks(_):
        # from the reading thread, on the first event: the fixture makes the rest in milliseconds
        if not started.is_set():
            box["signalled"] = time.monotonic()
            for pid in pids.values():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            started.set()

    def long_stream():
        try:
            box["s"] = stream(srv, "/v1/completions", {"model": srv.model, "prompt": "A long story:", "max_tokens": 240,
                                                       "temperature": 0, "ignore_eos": True}, on_event=signal_ranks)
        except Exception as e:  # noqa: BLE001 - reported below
            box["e"] = e
        started.set()

    t = threading.Thread(target=long_stream, daemon=True)
    t.start()
    started.wait(30)
    signalled = box.get("signalled", time.monotonic())
    t0 = time.monotonic()
    try:
        code = srv.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t0
    t.join(10)
    check(code == 0, f"mpirun: after SIGTERM every rank exits 0 (mpirun's exit code {code}, {took:.1f} s)", srv.log())
    s = box.get("s")
    check(s is not None and s.status == 200 and s.done and s.finish_reasons() == ["length"],
          "mpirun: the stream running at SIGTERM is finished (240 tokens, finish length, [DONE])",
          short(box.get("e") or (s and s.body), 800))
    if s and s.times and s.times[-1] < signalled:
        print("note: that stream had ended before the signal reached the ranks")
    time.sleep(0.5)
    left = marked(srv.mark)
    check(not left, "mpirun: nothing left running after SIGTERM", str(left))



# ---------------------------------------------------------------- e. backpressure


def case_backpressure():
    srv = slow_server()
    if not srv:
        return
    # connect all ten first, then send all ten requests at once
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=120) for _ in range(10)]
    data = [completion_bytes(srv.model, f"Request {i} tells a story about", 200) for i in range(10)]
    for s, d in zip(socks, data):
        s.sendall(d)
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda s: read_response(s.makefile("rb")), socks))
    for s in socks:
        s.close()
    accepted = rejected = 0
    for i, (status, headers, body) in enumerate(replies):
        if status == 200:
            j = json.loads(body)
            ok = j["choices"][0]["finish_reason"] == "length" and j["usage"]["completion_tokens"] == 200
            accepted += ok
            check(ok, f"backpressure: request {i} accepted and complete (finish length, 200 tokens)", short(j))
        elif status == 429:
            e = error_body(body)
            ok = headers.get("retry-after") is not None and e is not None and e.get("type") == "rate_limit_error"
            rejected += ok
            check(ok, f"backpressure: request {i}: 429 with Retry-After ({headers.get('retry-after')}) and a "
                  "rate_limit_error", f"{headers}\n{short(body)}")
        else:
            check(False, f"backpressure: request {i} is answered 200 or 429 (got {status})",
                  f"{headers}\n{short(body)}")
    check(rejected >= 1 and accepted >= 3, f"backpressure (--max-batch 1 --max-queue 2): {accepted} accepted, "
          f"{rejected} refused with 429 (at least 3 and 1)", srv.log())
    _, m = metrics(srv)
    check((metric(m, "tpserve_requests_rejected_total", reason="queue_full") or 0) >= rejected,
          "backpressure: tpserve_requests_rejected_total{reason=\"queue_full\"} counts them")



# ---------------------------------------------------------------- f. disconnect


def case_disconnect():
    srv = slow_server()
    if not srv:
        return
    # one choice; then two (with --max-batch 1 the second waits in the queue): every one is cancelled
    for n in (1, 2):
        what = "disconnect" if n == 1 else "disconnect with n=2"
        _, m = metrics(srv)
        before = metric(m, "tpserve_requests_total", outcome="cancelled") or 0
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        s.sendall(completion_bytes(srv.model, "Tell me a long story about the sea", 200, stream_=True, n=n))
        f = s.makefile("rb")
        got = b""
        while got.count(b"data: ") < 3:
            piece = f.read1(4096)
            if not piece:
                break
            got += piece
        check(got.count(b"data: ") >= 3, f"{what}: the stream's first 3 chunks arrive", short(got))
        f.close()
        s.close()
        t0 = time.monotonic()
        while True:
            r, m = metrics(srv)
            running = metric(m, "tpserve_requests_running")
            waiting = metric(m, "tpserve_requests_waiting")
            used = metric(m, "tpserve_kv_cache_tokens", state="used")
            if (running == 0 and waiting == 0 and used == 0) or time.monotonic() - t0 > 10:
                break
            time.sleep(0.2)
        check(running == 0 and waiting == 0 and used == 0,
              f"{what}: running 0, waiting 0 and KV tokens used 0 after {time.monotonic() - t0:.1f} s "
              f"(running {running}, waiting {waiting}, used {used})", short(r.text, 3000))
        after = metric(m, "tpserve_requests_total", outcome="cancelled") or 0
        check(after == before + n, f"{what}: tpserve_requests_total{{outcome=\"cancelled\"}} {before:g} -> "
              f"{after:g} (one per choice)", short(r.text, 3000))
    with client() as c:
        ok = c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": "Hi", "max_tokens": 2})
    check(ok.status_code == 200, "disconnect: the server serves the next request", ok.text)



# ---------------------------------------------------------------- j. SIGTERM, one process


def case_shutdown():
    """SIGTERM with one stream running and one request waiting (--max-batch 1): the running one is
    finished, the waiting one gets 503, the process exits 0."""
    srv = slow_server()
    if not srv:
        return
    slow = srv.model != "smollm2"
    started = threading.Event()
    box = {}

    def long_stream():
        try:
            box["s"] = stream(srv, "/v1/completions", {"model": srv.model, "prompt": "A long story:", "max_tokens": 200,
                                                       "temperature": 0, "ignore_eos": True},
                              on_event=lambda s: started.set())
        except Exception as e:  # noqa: BLE001 - reported below
            box["e"] = e
        started.set()

    def waiting():
        try:
            box["w"] = raw(srv, completion_bytes(srv.model, "Waiting in line", 8))
        except OSError as e:
            box["w"] = (None, {"error": repr(e)}, b"")

    t = threading.Thread(target=long_stream, daemon=True)
    t.start()
    started.wait(30)
    w = threading.Thread(target=waiting, daemon=True)
    w.start()
    end = time.monotonic() + 5
    while slow and time.monotonic() < end and (metric(metrics(srv)[1], "tpserve_requests_waiting") or 0) < 1:
        time.sleep(0.05)
    os.kill(srv.proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.2)
    if slow:  # the stream still runs: new connections are refused or answered 503
        try:
            status, _, b = raw(srv, completion_bytes(srv.model, "Too late", 4), timeout=10)
        except OSError:
            status, b = None, b""
        check(status in (None, 503), f"shutdown: a request after SIGTERM is refused or 503 (got {status})", short(b))
    try:
        code = srv.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    t.join(10)
    w.join(10)
    check(code == 0, f"shutdown: after SIGTERM the server exits 0 (got {code}, {time.monotonic() - signalled:.1f} s)",
          srv.log())
    s = box.get("s")
    check(s is not None and s.status == 200 and s.done and s.finish_reasons() == ["length"]
          and (s.usage() or {}).get("completion_tokens", 200) == 200 and len(s.text()) > 0,
          "shutdown: the stream running at SIGTERM is finished (finish length, [DONE])",
          short(box.get("e") or (s and s.body), 800))
    if slow:
        check(s is not None and s.times and s.times[-1] > signalled,
              "shutdown: that stream was still running at SIGTERM")
        status, headers, b = box.get("w", (None, {}, b""))
        check_error("shutdown: the request waiting at SIGTERM", status, headers, b, 503, "service_unavailable")
    drop_shared("slow")



# ---------------------------------------------------------------- k. --request-timeout


def case_timeout():
    if not REAL.exists():
        print(f"skipped: {REAL} missing (scripts/setup fetches it); the fixture cannot run past a second")
        return
    srv = Server(["--model", str(REAL), "--max-context", "512", "--threads", "1", "--request-timeout", "1"])
    if not srv.start():
        return
    status, headers, b = raw(srv, completion_bytes(srv.model, "A very long story:", 400))
    check_error("--request-timeout 1: a 400-token completion", status, headers, b, 408, "timeout_error")
    s = stream(srv, "/v1/completions", {"model": srv.model, "prompt": "A very long story:", "max_tokens": 400,
                                        "temperature": 0, "ignore_eos": True})
    errs = [e["error"] for e in s.chunks() if isinstance(e.get("error"), dict)]
    check(s.status == 200 and len(s.chunks()) > 1 and len(errs) == 1 and errs[0].get("type") == "timeout_error"
          and s.done and isinstance(s.events[-2], dict) and "error" in s.events[-2] and not s.bad,
          "--request-timeout 1: a stream gets its chunks, then one `data: {\"error\"}` of type timeout_error, "
          "then [DONE]", short(s.body[-600:]))
    with client() as c:
        r = c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": "Hi", "max_tokens": 2})
    check(r.status_code == 200, "--request-timeout 1: a short request is still served", r.text)
    _, m = metrics(srv)
    check((metric(m, "tpserve_requests_total", outcome="timeout") or 0) >= 2,
          "--request-timeout 1: tpserve_requests_total{outcome=\"timeout\"} counts both")
    srv.kill()



def case_api_key():
    """An API key from TPSERVE_API_KEY: the openai client with another key gets AuthenticationError
    (401), with it the answer; the chat page, /health and /metrics stay open."""
    srv = Server(["--model", str(FIXTURE), *SMALL], env={"TPSERVE_API_KEY": "sk-tps-test"})
    if not srv.start():
        return
    try:
        check(any("an API key is required" in line for line in srv.out), "the server says an API key is required",
              srv.log())
        wrong = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-wrong", max_retries=0)
        try:
            wrong.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            check(False, "a wrong API key is refused")
        except openai.AuthenticationError as e:
            check(e.status_code == 401 and e.code == "invalid_api_key", "a wrong API key: the openai client's "
                  "AuthenticationError (401, invalid_api_key)", str(e))
        right = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-tps-test", max_retries=0)
        r = right.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        check(r.choices[0].message.content is not None, "the right API key: an answer", short(r))
        with client() as hc:
            bare = hc.post(srv.url + "/tokenize", json={"prompt": "hi"})
            check(bare.status_code == 401 and bare.headers.get("www-authenticate") == "Bearer",
                  "/tokenize without a key: 401 with WWW-Authenticate: Bearer", f"{bare.status_code} {bare.text}")
            opened = [hc.get(srv.url + p).status_code for p in ("/", "/health", "/metrics")]
            check(opened == [200, 200, 200], "the chat page, /health and /metrics need no key", str(opened))
            metrics = hc.get(srv.url + "/metrics").text
            check('tpserve_requests_rejected_total{reason="unauthorized"} 2' in metrics,
                  "/metrics counts the refusals", metrics[-600:])
        # the anthropic client sends the key as x-api-key; a wrong one is its AuthenticationError
        ask = {"model": srv.model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
        got = anthropic.Anthropic(base_url=srv.url, api_key="sk-tps-test", max_retries=0).messages.create(**ask)
        try:
            anthropic.Anthropic(base_url=srv.url, api_key="sk-wrong", max_retries=0).messages.create(**ask)
            check(False, "a wrong x-api-key is refused")
        except anthropic.AuthenticationError as e:
            check(got.type == "message" and e.status_code == 401 and e.body["error"]["type"] == "authentication_error",
                  "x-api-key: the right key an answer, a wrong one the anthropic client's AuthenticationError", str(e))
        # CORS (any origin by default, as vLLM's): a browser's preflight needs no key; answers, errors
        # and streams carry Access-Control-Allow-Origin, so a web page elsewhere can read them
        page = {"Origin": "https://chat.example"}
        with client() as hc:
            pre = hc.options(srv.url + "/v1/chat/completions",
                             headers={**page, "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "authorization, content-type"})
            check(pre.status_code == 200 and pre.headers.get("access-control-allow-origin") == "*"
                  and "POST" in pre.headers.get("access-control-allow-methods", "")
                  and pre.headers.get("access-control-allow-headers") == "authorization, content-type",
                  "CORS preflight without a key: 200 allowing the origin, POST and the headers asked",
                  f"{pre.status_code} {dict(pre.headers)}")
            denied = hc.post(srv.url + "/v1/chat/completions", headers=page, json={"messages": []})
            check(denied.status_code == 401 and denied.headers.get("access-control-allow-origin") == "*",
                  "a cross-origin request without its key: 401 the page can read", f"{denied.status_code} {dict(denied.headers)}")
            with hc.stream("POST", srv.url + "/v1/chat/completions",
                           headers={**page, "Authorization": "Bearer sk-tps-test"},
                           json={"model": srv.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                                 "stream": True}) as st:
                body = "".join(st.iter_text())
            check(st.status_code == 200 and st.headers.get("access-control-allow-origin") == "*" and "[DONE]" in body,
                  "a cross-origin stream carries Access-Control-Allow-Origin", f"{st.status_code} {dict(st.headers)}")
            plain = hc.get(srv.url + "/health")
            check("access-control-allow-origin" not in plain.headers, "a request with no Origin gets no CORS headers",
                  str(dict(plain.headers)))
    finally:
        srv.kill()
    # named origins and credentials; other origins get nothing, and their preflights a 400
    srv = Server(["--model", str(FIXTURE), *SMALL, "--allowed-origins", "https://chat.example,http://localhost:3000",
                  "--allowed-methods", "GET,POST", "--allow-credentials"])
    if not srv.start():
        return
    try:
        with client() as hc:
            ok = hc.get(srv.url + "/v1/models", headers={"Origin": "http://localhost:3000"})
            check(ok.headers.get("access-control-allow-origin") == "http://localhost:3000"
                  and ok.headers.get("access-control-allow-credentials") == "true" and ok.headers.get("vary") == "Origin",
                  "--allowed-origins with --allow-credentials: the origin named back, credentials allowed", str(dict(ok.headers)))
            other = hc.get(srv.url + "/v1/models", headers={"Origin": "https://evil.example"})
            check(other.status_code == 200 and "access-control-allow-origin" not in other.headers,
                  "an origin not listed: no CORS headers (the browser keeps the answer from the page)", str(dict(other.headers)))
            refused = hc.options(srv.url + "/v1/models", headers={"Origin": "https://evil.example",
                                                                   "Access-Control-Request-Method": "DELETE"})
            check(refused.status_code == 400 and refused.text == "Disallowed CORS origin, method",
                  "a preflight from an origin not listed, for a method not allowed: 400 naming both",
                  f"{refused.status_code} {refused.text}")
    finally:
        srv.kill()
