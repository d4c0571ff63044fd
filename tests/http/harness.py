"""Shared machinery of the HTTP end-to-end test (http_test.py): paths and constants, check() and its
failure list, starting and stopping `tpserve serve` (alone or under mpirun), the HTTP/SSE helpers
(openai client, streams, raw sockets, error bodies) and /metrics parsing. The command line's
TPSERVE/MPIEXEC/flags live in `cfg`, which http_test.main() sets before any case runs.
"""
import array
import base64
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import procs  # noqa: E402  (tests/tools: finding a test's processes)

try:
    import httpx
except ImportError:  # openai 3.x ships its client as httpx2
    import httpx2 as httpx
try:
    import openai
except ImportError:
    print("FAIL: the openai package is missing from the virtual environment: run scripts/setup")
    sys.exit(1)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "models" / "smollm2"
REAL = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMALL = ["--max-context", "256", "--max-batch", "8", "--prefill-chunk", "64", "--threads", "1"]
CONTEXT = 256
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


class Config:
    """What the command line names; set once by http_test.main(), read by every module as cfg.x."""

    def __init__(self):
        self.tpserve = None
        self.mpiexec = None
        self.mpi_flags = []


cfg = Config()
failures = []
servers = []


def check(cond, what, detail=""):
    if cond:
        print(f"ok: {what}", flush=True)
    else:
        failures.append(what)
        print(f"FAIL: {what}\n{detail}".rstrip(), flush=True)
    return bool(cond)


def short(x, n=1500):
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# ---------------------------------------------------------------- servers


def marked(mark):
    """Every process that carries one server's marker in its environment: {pid: rank or None}
    (mpirun puts its ranks in process groups of their own, so killing its group misses them)."""
    return {pid: rank for pid, (rank, _) in procs.marked("TPS_HTTP_TEST", mark).items()}


def rank_pids(mark):
    """{rank: pid} of the ranks mpirun started for one server."""
    return {rank: pid for pid, rank in marked(mark).items() if rank is not None}


class Server:
    """One `tpserve serve` (under mpirun when np > 1) on a free port; keeps all its output."""

    def __init__(self, args, np=1, env=None):
        self.mark = uuid.uuid4().hex
        self.np = np
        self.key = (env or {}).get("TPSERVE_API_KEY")  # what /v1/models needs once it is set
        cmd = [cfg.tpserve, "serve", "--host", "127.0.0.1", "--port", "0", *args]
        if np > 1:
            cmd = [cfg.mpiexec, *cfg.mpi_flags, "-x", "TPS_HTTP_TEST", "-np", str(np), *cmd]
        self.cmd = cmd
        self.out = []
        self.lock = threading.Lock()
        self.port = None
        self.model = None
        self.loading_bodies = []
        self.listening = threading.Event()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=dict(ENV, TPS_HTTP_TEST=self.mark, **(env or {})),
                                     start_new_session=True)
        servers.append(self)
        for stream in (self.proc.stderr, self.proc.stdout):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            with self.lock:
                self.out.append(line)
            m = re.search(r"listening on http://([^\s/]+):(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(2))
                self.listening.set()

    def log(self, tail=4000):
        with self.lock:
            text = "".join(self.out)
        return f"[{' '.join(self.cmd)}]\n" + (text if len(text) <= tail else "..." + text[-tail:])

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, limit=120):
        """Waits for `listening on`, then for /health 200; False (and a FAIL) if it never comes."""
        end = time.monotonic() + limit
        while not self.listening.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > end:
                return check(False, "the server starts and says 'listening on http://HOST:PORT'", self.log())
        with httpx.Client(trust_env=False, timeout=5) as c:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    break
                try:
                    r = c.get(self.url + "/health")
                    if r.status_code == 200:
                        auth = {"Authorization": f"Bearer {self.key}"} if self.key else {}
                        self.model = c.get(self.url + "/v1/models", headers=auth).json()["data"][0]["id"]
                        return True
                    self.loading_bodies.append((r.status_code, r.text))
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        return check(False, "the server's /health answers 200 within 120 s", self.log())

    def kill(self):
        for pid in marked(self.mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


_shared = {}


def shared(name, make):
    """A server started once and used by several cases (None if it did not start)."""
    if name not in _shared:
        s = make()
        _shared[name] = s if s.start() else None
    return _shared[name]


def drop_shared(name):
    """Forgets a shared server that a case has stopped, so no later case uses it."""
    _shared[name] = None


def main_server():
    return shared("main", lambda: Server(["--model", str(FIXTURE), *SMALL]))


def slow_server():
    model = REAL if REAL.exists() else FIXTURE
    if model is FIXTURE:
        print(f"note: {REAL} missing (scripts/setup fetches it); backpressure, disconnect and shutdown use the "
              "fixture, whose 200 tokens may finish before the client reacts")
    return shared("slow", lambda: Server(["--model", str(model), "--max-context", "512", "--max-batch", "1",
                                          "--max-queue", "2", "--prefill-chunk", "64", "--threads", "1"]))


# ---------------------------------------------------------------- HTTP helpers


def client(timeout=60):
    return httpx.Client(trust_env=False, timeout=timeout)


def oai(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60,
                         http_client=client())


def tokenize(srv, prompt, **extra):
    with client() as c:
        return c.post(srv.url + "/tokenize", json={"prompt": prompt, **extra}).json()


class Sse:
    """One streamed response: status, headers, the parsed events (dicts, or "[DONE]") and their arrival times."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.events = []
        self.times = []
        self.bad = []  # events that are not `data: ...` lines
        self.body = b""

    @property
    def done(self):
        return bool(self.events) and self.events[-1] == "[DONE]"

    def chunks(self):
        return [e for e in self.events if isinstance(e, dict)]

    def text(self, chat=False):
        out = []
        for e in self.chunks():
            for ch in e.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content") if chat else ch.get("text")
                out.append(piece or "")
        return "".join(out)

    def finish_reasons(self):
        return [ch["finish_reason"] for e in self.chunks() for ch in e.get("choices") or [] if ch.get("finish_reason")]

    def usage(self):
        u = [e["usage"] for e in self.chunks() if e.get("usage")]
        return u[-1] if u else None

    def logprob_tokens(self):
        toks, lps = [], []
        for e in self.chunks():
            for ch in e.get("choices") or []:
                lp = ch.get("logprobs")
                if lp:
                    toks += lp.get("tokens") or []
                    lps += lp.get("token_logprobs") or []
        return toks, lps


def parse_sse_events(data, sse, now):
    """Splits complete events off `data` into sse; returns what is left."""
    while True:
        m = re.search(rb"\r?\n\r?\n", data)
        if not m:
            return data
        raw, data = data[:m.start()], data[m.end():]
        lines = raw.decode(errors="replace").splitlines()
        if len(lines) != 1 or not lines[0].startswith("data: "):
            sse.bad.append(raw)
            continue
        payload = lines[0][len("data: "):]
        sse.times.append(now)
        if payload == "[DONE]":
            sse.events.append("[DONE]")
        else:
            try:
                sse.events.append(json.loads(payload))
            except ValueError:
                sse.bad.append(raw)


def stream(srv, path, body, on_event=None, c=None):
    """POSTs a streaming request and reads the whole SSE response (on_event(sse) after each event)."""
    sse = Sse()
    own = c is None
    c = c or client()
    try:
        with c.stream("POST", srv.url + path, json={**body, "stream": True}) as r:
            sse.status = r.status_code
            sse.headers = {k.lower(): v for k, v in r.headers.items()}
            buf = b""
            for piece in r.iter_bytes():
                sse.body += piece
                buf = parse_sse_events(buf + piece, sse, time.monotonic())
                if on_event and sse.events:
                    on_event(sse)
    finally:
        if own:
            c.close()
    return sse


def http_bytes(method, path, body=b"", headers=(), keep_alive=False):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: " + ("keep-alive" if keep_alive else "close"),
            *headers]
    if method == "POST":
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_response(f, on_piece=None):
    """Reads one HTTP/1.1 response from a socket file: (status, headers, body), status None if the
    connection closed (or reset) before a status line. on_piece(bytes) sees each chunk as it comes."""
    try:
        line = f.readline()
        if not line:
            return None, {}, b""
        status = int(line.split()[1])
        headers = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode(errors="replace").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(f.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    f.readline()
                    break
                piece = f.read(size)
                if on_piece:
                    on_piece(piece)
                body += piece
                f.readline()
        elif "content-length" in headers:
            body = f.read(int(headers["content-length"]))
        else:
            body = f.read()
        return status, headers, body
    except (ConnectionResetError, BrokenPipeError, socket.timeout) as e:
        return None, {"error": repr(e)}, b""


def raw(srv, data, timeout=30):
    """Sends raw bytes on a new connection and reads one response (a reset while sending is ignored:
    the server may answer before it has read everything)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_response(s.makefile("rb"))


def error_body(body):
    try:
        e = json.loads(body)["error"]
        return e if isinstance(e, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def check_error(what, status, headers, body, want_status, want_type, code=None):
    e = error_body(body)
    detail = f"got {status} {short(body.decode(errors='replace') if isinstance(body, bytes) else body)}"
    ok = check(status == want_status, f"{what}: {want_status}", detail)
    ok &= check(e is not None and isinstance(e.get("message"), str) and e["message"] and e.get("type") == want_type
                and "param" in e and "code" in e,
                f"{what}: an OpenAI error object of type {want_type} (message, type, param, code)", detail)
    if code is not None:
        ok &= check(e is not None and e.get("code") == code, f"{what}: code {code}", detail)
    return e if ok else None


def metrics(srv):
    with client() as c:
        r = c.get(srv.url + "/metrics")
    return r, parse_metrics(r.text)


def parse_metrics(text):
    """{(name, frozenset of (label, value))): value} plus {name: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        try:
            samples[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return samples, types


def metric(parsed, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None if there is none."""
    samples = parsed[0]
    want = set(labels.items())
    vals = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    return sum(vals) if vals else None


# ---------------------------------------------------------------- checks and requests used by both case files


def check_plan(srv, plan, ranks, what):
    per = plan.get("per_rank")
    check(isinstance(per, list) and len(per) == ranks, f"{what}: /v1/plan has {ranks} per_rank entries", short(plan))
    for e in per or []:
        pred = e.get("bytes") or {}
        act = e.get("actual")
        if act is None:
            act = next((v for k, v in e.items() if "actual" in k), None)
        ok = isinstance(act, dict) and all(isinstance(act.get(k), int) for k in ("weights", "total")) \
            and act["total"] > 0 and isinstance(pred.get("total"), int) and pred["total"] > 0
        check(ok, f"{what}: /v1/plan rank {e.get('rank')}: predicted and actual bytes (weights, total)", short(e))
        if ok:
            # docs/design.md: each rank's weight bytes match the plan to the byte
            check(act["weights"] == pred.get("weights"),
                  f"{what}: rank {e.get('rank')}'s actual weight bytes equal the plan's ({act['weights']})",
                  short(e))


def completion_bytes(model, prompt, max_tokens, stream_=False, n=1):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "n": n}
    if stream_:
        body["stream"] = True
    return http_bytes("POST", "/v1/completions", json.dumps(body).encode())


def reference_scores(name):
    """A fixture prompt of reference.json (transformers' logits at every position): its token ids,
    each token's log-probability given the ones before it (None for the first), and the most
    likely token's there."""
    ref = json.loads((FIXTURE / "reference.json").read_text())
    p = next(x for x in ref["prompts"] if x["name"] == name)
    ids, vocab = p["input_ids"], p["logits_shape"][1]
    flat = array.array("f", base64.b64decode(p["logits_b64"]))
    want, best = [None], [None]
    for i in range(1, len(ids)):
        row = flat[(i - 1) * vocab:i * vocab]
        mx = max(row)
        log_z = mx + math.log(sum(math.exp(x - mx) for x in row))
        want.append(row[ids[i]] - log_z)
        best.append(mx - log_z)
    return ids, want, best


def reference_ranks(name):
    """vLLM's rank of each token of a reference.json prompt (how many tokens transformers' logits
    there give at least as much; None for the first), or None where another token's logit is within
    1e-3 of it (a rank our float order may fairly swap)."""
    ref = json.loads((FIXTURE / "reference.json").read_text())
    p = next(x for x in ref["prompts"] if x["name"] == name)
    ids, vocab = p["input_ids"], p["logits_shape"][1]
    flat = array.array("f", base64.b64decode(p["logits_b64"]))
    ranks = [None]
    for i in range(1, len(ids)):
        row = flat[(i - 1) * vocab:i * vocab]
        own = row[ids[i]]
        near = sum(1 for x in row if abs(x - own) < 1e-3)
        ranks.append(sum(1 for x in row if x >= own) if near == 1 else None)
    return ranks
