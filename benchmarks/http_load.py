#!/usr/bin/env python3
"""Load generator for `tpserve serve` (any OpenAI-compatible /v1/completions server).

For each concurrency level it runs that many clients, each sending streaming completions one after
another over its own keep-alive HTTP/1.1 connection (temperature 0, ignore_eos, include_usage)
until the level's requests are done. Per request it records the time to the first content chunk
and every gap between content chunks of the same choice (by arrival time); per level, the
generated tokens (from `usage`, every choice's) over the level's wall time. `--n` asks for that
many choices per request (they share the prompt's prefill). Python standard library only: asyncio streams, raw HTTP/1.1,
SSE parsed here, so the client adds as little as it can to what it measures.

usage:
  benchmarks/http_load.py --url http://127.0.0.1:8000 [--model NAME] [--concurrency 1,8,32,64]
                          [--requests N] [--max-tokens 64] [--prompt TEXT] [--n 1] [--timeout 600] [--json OUT]
                          [--extra JSON]

  --model        default: the first id from GET /v1/models
  --requests     per level; default 2 x concurrency, at least 4
  --extra        fields merged into every body (e.g. {"response_format": {"type": "json_object"}})
Prints a markdown table on stdout (concurrency, requests, generated tok/s, each stream's own decode
tok/s (mean), p50/p99 TTFT ms, p50/p99 ITL ms, errors) and a progress line on stderr; --json also writes every level's figures.

example (a server on the test fixture):
  build/ci/launcher/tpserve serve --model tests/fixtures/models/smollm2 --port 8000 &
  benchmarks/http_load.py --url http://127.0.0.1:8000 --concurrency 1,8
"""
import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse

DEFAULT_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    auth = ""  # "Authorization: Bearer KEY\r\n" when --api-key (or TPSERVE_API_KEY) is given

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, method, path, body=b""):
        await self.open()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: keep-alive\r\n"
                f"Accept: */*\r\nContent-Type: application/json\r\n{self.auth}Content-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()

    async def response_head(self):
        """(status, headers with lower-case names)."""
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection without a response")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionError(f"not an HTTP response: {line[:80]!r}")
        headers = {}
        while True:
            h = await self.reader.readline()
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise ConnectionError("the connection closed inside the response headers")
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(parts[1]), headers

    async def body_pieces(self, headers):
        """Yields the body as it arrives (chunked, Content-Length or up to the close); closes the
        connection afterwards when the server asked for that or gave no length."""
        reusable = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self.reader.readline()
                if not size_line:
                    raise ConnectionError("the connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                yield await self.reader.readexactly(size)
                await self.reader.readexactly(2)
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                piece = await self.reader.read(min(left, 65536))
                if not piece:
                    raise ConnectionError("the connection closed inside the body")
                left -= len(piece)
                yield piece
        else:
            reusable = False
            while True:
                piece = await self.reader.read(65536)
                if not piece:
                    break
                yield piece
        if not reusable:
            self.close()


class Result:
    def __init__(self):
        self.ok = False
        self.error = None
        self.ttft = None  # seconds from sending the request to the first content chunk
        self.gaps = []  # seconds between consecutive content chunks
        self.tokens = 0  # completion tokens (usage; the content chunks if no usage came)


async def one_request(conn, model, prompt, max_tokens, n=1, extra=None):
    r = Result()
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "n": n,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
                       **(extra or {})}).encode()
    start = time.perf_counter()
    try:
        await conn.send("POST", "/v1/completions", body)
        status, headers = await conn.response_head()
        if status != 200:
            text = b"".join([p async for p in conn.body_pieces(headers)])
            r.error = f"HTTP {status}: {text[:200].decode(errors='replace')}"
            return r
        buf = b""
        last = {}  # choice index: when its last content chunk came
        chunks = 0
        usage = None
        done = False
        async for piece in conn.body_pieces(headers):
            now = time.perf_counter()
            buf = (buf + piece).replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    msg = json.loads(data)
                    if "error" in msg:
                        r.error = f"stream error: {json.dumps(msg['error'])[:200]}"
                        continue
                    if msg.get("usage"):
                        usage = msg["usage"]
                    for ch in msg.get("choices") or []:
                        if not ch.get("text"):
                            continue
                        chunks += 1
                        i = ch.get("index", 0)
                        if r.ttft is None:
                            r.ttft = now - start
                        if i in last:
                            r.gaps.append(now - last[i])
                        last[i] = now
        if r.error is None and not done:
            r.error = "the stream ended without data: [DONE]"
        r.tokens = usage["completion_tokens"] if usage else chunks
        r.ok = r.error is None
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
        r.error = f"{type(e).__name__}: {e}"
        conn.close()
    return r


def percentile(values, q):
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


async def run_level(host, port, model, concurrency, requests, max_tokens, prompt, timeout, n=1, extra=None):
    results = []
    taken = 0
    start = time.perf_counter()

    def progress(final=False):
        if not final and not sys.stderr.isatty():
            return  # one line per level in a log, a live line on a terminal
        errors = sum(not r.ok for r in results)
        sys.stderr.write(f"\r[concurrency {concurrency}] {len(results)}/{requests} requests, {errors} errors, "
                         f"{time.perf_counter() - start:.1f} s" + ("\n" if final else ""))
        sys.stderr.flush()

    async def client():
        nonlocal taken
        conn = Connection(host, port)
        try:
            while taken < requests:
                taken += 1
                try:
                    r = await asyncio.wait_for(one_request(conn, model, prompt, max_tokens, n, extra), timeout)
                except asyncio.TimeoutError:
                    r = Result()
                    r.error = f"no complete response within {timeout} s"
                    conn.close()
                results.append(r)
                progress()
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    progress(final=True)
    good = [r for r in results if r.ok]
    ttft = [r.ttft * 1e3 for r in good if r.ttft is not None]
    itl = [g * 1e3 for r in good for g in r.gaps]
    tokens = sum(r.tokens for r in good)
    errors = [r.error for r in results if not r.ok]
    # each stream's own decode rate: content chunks after the first over the time they took
    decode = [len(r.gaps) / sum(r.gaps) for r in good if r.gaps and sum(r.gaps) > 0]
    return {
        "concurrency": concurrency, "requests": len(results), "ok": len(good), "errors": len(errors),
        "wall_s": wall, "generated_tokens": tokens, "generated_tok_s": tokens / wall if wall > 0 else 0.0,
        "stream_decode_tok_s": sum(decode) / len(decode) if decode else None,
        "ttft_ms": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99),
                    "mean": sum(ttft) / len(ttft) if ttft else None},
        "itl_ms": {"p50": percentile(itl, 50), "p99": percentile(itl, 99),
                   "mean": sum(itl) / len(itl) if itl else None, "gaps": len(itl)},
        "error_samples": errors[:5],
    }


async def served_model(host, port):
    conn = Connection(host, port)
    try:
        await conn.send("GET", "/v1/models")
        status, headers = await conn.response_head()
        body = b"".join([p async for p in conn.body_pieces(headers)])
        if status != 200:
            raise SystemExit(f"GET /v1/models: HTTP {status}: {body[:200]!r}")
        return json.loads(body)["data"][0]["id"]
    finally:
        conn.close()


def fmt(x):
    return "-" if x is None else f"{x:.1f}"


def table(levels):
    rows = ["| concurrency | requests | generated tok/s | per-stream decode tok/s | p50 TTFT ms | p99 TTFT ms "
            "| p50 ITL ms | p99 ITL ms | errors |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lv in levels:
        rows.append(f"| {lv['concurrency']} | {lv['requests']} | {lv['generated_tok_s']:.1f} | "
                    f"{fmt(lv['stream_decode_tok_s'])} | "
                    f"{fmt(lv['ttft_ms']['p50'])} | {fmt(lv['ttft_ms']['p99'])} | {fmt(lv['itl_ms']['p50'])} | "
                    f"{fmt(lv['itl_ms']['p99'])} | {lv['errors']} |")
    return "\n".join(rows)


async def main_async(args):
    u = urllib.parse.urlsplit(args.url)
    if u.scheme != "http" or not u.hostname:
        raise SystemExit(f"--url: {args.url!r} is not http://HOST:PORT (https is not supported)")
    host, port = u.hostname, u.port or 80
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--concurrency: {args.concurrency!r} is not a comma-separated list of numbers")
    if not levels or min(levels) < 1:
        raise SystemExit("--concurrency: each level must be at least 1")
    if args.n < 1:
        raise SystemExit(f"--n: {args.n} choices; at least 1")
    model = args.model or await served_model(host, port)
    out = []
    for c in levels:
        n = args.requests if args.requests else max(4, 2 * c)
        out.append(await run_level(host, port, model, c, n, args.max_tokens, args.prompt, args.timeout, args.n,
                                   args.extra))
        for e in out[-1]["error_samples"][:2]:
            sys.stderr.write(f"  error: {e}\n")
    print(f"model {model}, max_tokens {args.max_tokens}, n {args.n}, url {args.url}\n")
    print(table(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"url": args.url, "model": model, "max_tokens": args.max_tokens, "n": args.n, "prompt": args.prompt,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "levels": out}, f, indent=2)
    return 1 if all(lv["ok"] == 0 for lv in out) else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="default: the first id from /v1/models")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated levels (default 1,8,32,64)")
    p.add_argument("--requests", type=int, default=0, help="requests per level (default 2 x concurrency, at least 4)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--n", type=int, default=1, help="choices per request (default 1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one request may take (default 600)")
    p.add_argument("--extra", type=json.loads, default=None, metavar="JSON",
                   help="fields merged into every request body, e.g. a response_format")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures to this JSON file")
    p.add_argument("--api-key", default=os.environ.get("TPSERVE_API_KEY"),
                   help="for a server started with --api-key (default: $TPSERVE_API_KEY)")
    args = p.parse_args()
    if args.api_key:
        Connection.auth = f"Authorization: Bearer {args.api_key}\r\n"
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
