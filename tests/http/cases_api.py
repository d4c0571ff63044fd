"""The API cases of the HTTP end-to-end test (http_test.py): what a client sees of the contract in
docs/api.md. The openai client, greedy results equal to `tpserve generate`, raw SSE framing with
curl (and keep-alive latency), Prometheus metrics, error statuses and bodies, the small endpoints.
"""
import json
import socket
import subprocess
import time

from harness import (CONTEXT, ENV, FIXTURE, SMALL, Server, cfg, check, check_error, check_plan, client, http_bytes,
                     main_server, metric, metrics, oai, raw, read_response, reference_scores, short, stream, tokenize)


# ---------------------------------------------------------------- a. the openai client


def counts(usage):
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


def detokenize(srv, ids):
    with client() as hc:
        return hc.post(srv.url + "/detokenize", json={"tokens": ids}).json()["prompt"]


def case_openai():
    srv = main_server()
    if not srv:
        return
    c = oai(srv)
    m = srv.model
    prompt = "The lighthouse keeper said"
    count = tokenize(srv, prompt)["count"]

    # completions, not streamed
    r = c.completions.create(model=m, prompt=prompt, max_tokens=16, temperature=0)
    ch, u = r.choices[0], r.usage
    check(r.object == "text_completion" and len(r.choices) == 1 and isinstance(ch.text, str) and r.model == m
          and bool(r.id), "completions: a text_completion with one choice, an id and the model", short(r))
    check(ch.finish_reason in ("stop", "length"), f"completions: finish_reason {ch.finish_reason}", short(r))
    check(u.prompt_tokens == count and u.total_tokens == u.prompt_tokens + u.completion_tokens
          and 1 <= u.completion_tokens <= 16 and (ch.finish_reason == "stop" or u.completion_tokens == 16),
          f"completions: usage {u.prompt_tokens}+{u.completion_tokens}={u.total_tokens} (prompt {count} tokens)",
          short(r))
    r2 = c.completions.create(model=m, prompt=prompt, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    check(r2.choices[0].finish_reason == "length" and r2.usage.completion_tokens == 16,
          "completions with ignore_eos: finish_reason length after exactly max_tokens", short(r2))

    # the same, streamed
    chunks = list(c.completions.create(model=m, prompt=prompt, max_tokens=16, temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    text = "".join(k.choices[0].text for k in chunks if k.choices)
    finish = [k.choices[0].finish_reason for k in chunks if k.choices and k.choices[0].finish_reason]
    with_usage = [k for k in chunks if k.usage]
    check(all(k.object == "text_completion" for k in chunks) and len(chunks) >= 2,
          f"completions stream: {len(chunks)} text_completion chunks", short(chunks))
    check(text == ch.text, "completions stream: the streamed text joined is the non-streamed text",
          f"streamed {text!r}\nnot streamed {ch.text!r}")
    check(finish == [ch.finish_reason], f"completions stream: one chunk with finish_reason {ch.finish_reason}",
          short(finish))
    check(len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1].choices == []
          and counts(with_usage[0].usage) == counts(u),
          "completions stream: include_usage adds a last chunk with empty choices and the same usage",
          short(chunks[-2:]))
    plain = list(c.completions.create(model=m, prompt=prompt, max_tokens=4, temperature=0, stream=True))
    check(plain and all(k.choices and not k.usage for k in plain),
          "completions stream without include_usage: no usage chunk", short(plain))

    # the prefix cache: the same long prompt again reuses the first one's whole 16-token blocks, says
    # so in usage, and gives the same text
    long_prompt = "A ledger of the harbour, kept by the night clerk: " + ", ".join(f"crate {i} of copper"
                                                                               for i in range(14))
    n_long = tokenize(srv, long_prompt)["count"]
    first = c.completions.create(model=m, prompt=long_prompt, max_tokens=8, temperature=0)
    again = c.completions.create(model=m, prompt=long_prompt, max_tokens=8, temperature=0)
    cached = [getattr(x.usage.prompt_tokens_details, "cached_tokens", None) for x in (first, again)]
    want = (n_long - 1) // 16 * 16
    check(cached == [0, want] and again.choices[0].text == first.choices[0].text,
          f"prefix cache: a {n_long}-token prompt sent twice reports cached_tokens {cached} (want [0, {want}]) "
          "and gives the same text", short([first, again]))

    # logit_bias (through the official client): +100 makes a token every pick; -100 bans the
    # greedy first token
    harbour = tokenize(srv, " harbour", add_special_tokens=False)["tokens"][0]
    forced = c.completions.create(model=m, prompt=prompt, max_tokens=4, temperature=0,
                                  logit_bias={str(harbour): 100}, logprobs=0)
    picked = forced.choices[0].logprobs.tokens if forced.choices[0].logprobs else None
    with client() as hc:
        want_text = hc.post(srv.url + "/detokenize", json={"tokens": [harbour] * 4}).json().get("prompt")
    check(forced.choices[0].text == want_text and picked is not None and len(picked) == 4,
          f"logit_bias +100 on token {harbour}: every one of 4 tokens is it ({forced.choices[0].text!r})", short(forced))
    plain = c.completions.create(model=m, prompt=prompt, max_tokens=1, temperature=0, logprobs=1)
    first_id = tokenize(srv, plain.choices[0].text, add_special_tokens=False)["tokens"]
    banned = c.completions.create(model=m, prompt=prompt, max_tokens=1, temperature=0,
                                  logit_bias={str(first_id[0]): -100} if first_id else None)
    check(bool(first_id) and banned.choices[0].text != plain.choices[0].text,
          f"logit_bias -100 on the greedy first token {plain.choices[0].text!r}: another is chosen "
          f"({banned.choices[0].text!r})", short([plain, banned]))

    # n choices: each under its index with its own seed (the first is what n = 1 gives), the prompt
    # counted once; streamed, each piece under its choice's index
    ask = dict(model=m, prompt=prompt, max_tokens=12, temperature=0.9, seed=5, extra_body={"ignore_eos": True})
    one = c.completions.create(**ask)
    three = c.completions.create(n=3, **ask)
    texts = [x.text for x in three.choices]
    check([x.index for x in three.choices] == [0, 1, 2] and texts[0] == one.choices[0].text and len(set(texts)) > 1
          and all(x.finish_reason == "length" for x in three.choices),
          "completions n=3: three choices in order, the first the n=1 answer, each its own seed", short(three))
    check(three.usage.prompt_tokens == count and three.usage.completion_tokens == 36,
          f"completions n=3: usage counts the prompt once and every choice's tokens ({counts(three.usage)})",
          short(three.usage))
    s = stream(srv, "/v1/completions", {"model": m, "prompt": prompt, "max_tokens": 12, "temperature": 0.9, "seed": 5,
                                        "n": 3, "ignore_eos": True, "stream_options": {"include_usage": True}})
    per, fin = {}, {}
    for e in s.chunks():
        for x in e.get("choices") or []:
            per[x["index"]] = per.get(x["index"], "") + x["text"]
            if x.get("finish_reason"):
                fin[x["index"]] = fin.get(x["index"], []) + [x["finish_reason"]]
    u = s.usage() or {}
    check(s.done and per == dict(enumerate(texts)) and fin == {i: ["length"] for i in range(3)}
          and u.get("completion_tokens") == 36 and u.get("prompt_tokens") == count,
          "completions stream n=3: each choice's pieces under its index join to its text, one finish each, one usage",
          short(s.events[-4:]))
    # several prompts: a choice for each, in order, each what it gives alone
    other = "Once upon a time"
    both = c.completions.create(model=m, prompt=[prompt, other], max_tokens=8, temperature=0)
    alone = [c.completions.create(model=m, prompt=p, max_tokens=8, temperature=0) for p in (prompt, other)]
    check([x.text for x in both.choices] == [a.choices[0].text for a in alone]
          and [x.index for x in both.choices] == [0, 1]
          and both.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
          and both.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone),
          "completions with two prompts: two choices, each the prompt's answer alone, usage summed", short(both))

    # echo with logprobs (how lm-evaluation-harness scores): the prompt's tokens with the
    # log-probability transformers' logits give each (tests/fixtures/.../reference.json), the first
    # null; max_tokens 0 scores only; several token-id prompts with max_tokens 1, as lm-eval sends
    for name in ("long", "unicode"):
        ids, want, best = reference_scores(name)
        with client() as hc:
            text = hc.post(srv.url + "/detokenize", json={"tokens": ids}).json()["prompt"]
        scored = c.completions.create(model=m, prompt=ids, max_tokens=0, echo=True, logprobs=3, temperature=0)
        sc = scored.choices[0]
        lp = sc.logprobs
        worst = max(abs(a - b) for a, b in zip(lp.token_logprobs[1:], want[1:])) if lp and len(lp.token_logprobs) > 1 else 1
        # (alternatives are keyed by their text, as OpenAI's: byte tokens that all read U+FFFD are one)
        check(lp is not None and len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
              and worst < 1e-4 and all(1 <= len(t) <= 3 and abs(max(t.values()) - b) < 1e-4
                                       for t, b in zip(lp.top_logprobs[1:], best[1:])),
              f"echo, logprobs 3, max_tokens 0 on the {len(ids)}-token '{name}' prompt: every token after the first "
              f"scored as transformers' logits give it (largest difference {worst:.1e}), the first null, the best "
              "alternative the most likely token's", short(lp))
        check(sc.text == text and sc.finish_reason == "length" and scored.usage.completion_tokens == 0
              and scored.usage.prompt_tokens == len(ids),
              f"echo, max_tokens 0 on '{name}': the text is the prompt's, nothing generated, usage {len(ids)}+0",
              short(scored))
        if name != "long":
            continue
        short_ids = ids[:12]
        plain = c.completions.create(model=m, prompt=ids, max_tokens=1, temperature=0, logprobs=1)
        lm = c.completions.create(model=m, prompt=[ids, short_ids], max_tokens=1, echo=True, logprobs=1, temperature=0)
        a, b = (x.logprobs for x in lm.choices)
        check(len(a.token_logprobs) == len(ids) + 1 and len(b.token_logprobs) == len(short_ids) + 1
              and all(abs(x - y) < 1e-4 for x, y in zip(a.token_logprobs[1:len(ids)], want[1:]))
              and all(abs(x - y) < 1e-4 for x, y in zip(b.token_logprobs[1:len(short_ids)], want[1:len(short_ids)]))
              and lm.choices[0].text == text + plain.choices[0].text
              and abs(a.token_logprobs[-1] - plain.choices[0].logprobs.token_logprobs[0]) < 1e-5,
              "echo, logprobs 1, max_tokens 1 with two token-id prompts (as lm-eval sends): each prompt scored, then "
              "the token it gives without echo", short(lm))
        s = stream(srv, "/v1/completions", {"model": m, "prompt": ids, "max_tokens": 4, "temperature": 0, "echo": True})
        first = s.chunks()[0]["choices"][0]["text"] if s.chunks() else None
        check(first == text and s.text().startswith(text) and s.done,
              "echo streamed: the first chunk is the prompt's text, the generated text follows", short(s.events[:3]))

    # prompt as a one-string array and as token ids
    ids = tokenize(srv, prompt)["tokens"]
    for form, p in (("a one-string array", [prompt]), ("token ids", ids)):
        rr = c.completions.create(model=m, prompt=p, max_tokens=16, temperature=0)
        check(rr.choices[0].text == ch.text and rr.usage.prompt_tokens == count,
              f"completions: the prompt as {form} gives the same text", f"{rr.choices[0].text!r} vs {ch.text!r}")

    # a stop string: the text up to it, not including it, in both forms
    long = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    t = long.choices[0].text
    stop = next((t[i:i + 3] for i in range(4, len(t) - 3) if "\ufffd" not in t[i:i + 3] and t[i:i + 3].strip()), None)
    if stop:
        want = t[:t.index(stop)]
        rs = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, stop=[stop],
                                  extra_body={"ignore_eos": True})
        check(rs.choices[0].text == want and rs.choices[0].finish_reason == "stop",
              f"completions: stop {stop!r} ends the text before it with finish_reason stop",
              f"got {rs.choices[0].text!r} ({rs.choices[0].finish_reason}), want {want!r}")
        ss = stream(srv, "/v1/completions", {"model": m, "prompt": prompt, "max_tokens": 24, "temperature": 0,
                                             "stop": stop, "ignore_eos": True})
        check(ss.text() == want and ss.finish_reasons() == ["stop"], f"completions stream: stop {stop!r} likewise",
              f"got {ss.text()!r} {ss.finish_reasons()}, want {want!r}")

    # chat, not streamed and streamed
    msgs = [{"role": "user", "content": "Tell me about the sea."}]
    with client() as hc:
        chat_count = hc.post(srv.url + "/tokenize", json={"messages": msgs}).json()["count"]
    r = c.chat.completions.create(model=m, messages=msgs, max_tokens=16, temperature=0)
    cc, cu = r.choices[0], r.usage
    check(r.object == "chat.completion" and cc.message.role == "assistant" and isinstance(cc.message.content, str),
          "chat: a chat.completion with an assistant message", short(r))
    check(cc.finish_reason in ("stop", "length") and cu.prompt_tokens == chat_count
          and cu.total_tokens == cu.prompt_tokens + cu.completion_tokens and 1 <= cu.completion_tokens <= 16
          and (cc.finish_reason == "stop" or cu.completion_tokens == 16),
          f"chat: finish_reason {cc.finish_reason}, usage {cu.prompt_tokens}+{cu.completion_tokens}="
          f"{cu.total_tokens} (/tokenize says {chat_count} prompt tokens)", short(r))
    chunks = list(c.chat.completions.create(model=m, messages=msgs, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    first = chunks[0].choices[0].delta if chunks and chunks[0].choices else None
    check(first is not None and first.role == "assistant" and first.content == "",
          "chat stream: the first chunk's delta is {role: assistant, content: ''}", short(chunks[:1]))
    check(all(k.object == "chat.completion.chunk" for k in chunks), "chat stream: chat.completion.chunk objects")
    text = "".join(k.choices[0].delta.content or "" for k in chunks if k.choices)
    check(text == cc.message.content, "chat stream: the streamed content joined is the non-streamed content",
          f"streamed {text!r}\nnot streamed {cc.message.content!r}")
    finish = [k.choices[0].finish_reason for k in chunks if k.choices and k.choices[0].finish_reason]
    check(finish == [cc.finish_reason], f"chat stream: one chunk with finish_reason {cc.finish_reason}", short(finish))
    # (the same messages again: their prompt's whole blocks now come from the prefix cache)
    su = chunks[-1].usage if chunks else None
    check(chunks and chunks[-1].choices == [] and su and counts(su) == counts(cu)
          and su.prompt_tokens_details.cached_tokens == (cu.prompt_tokens - 1) // 16 * 16,
          "chat stream: include_usage adds a last chunk with empty choices and the same usage, the repeated "
          "prompt's whole blocks cached", short(chunks[-2:]))
    # continue_final_message: the answer goes on with a prefilled assistant reply, the same tokens as
    # completions on the prompt /tokenize renders for it
    prefilled = msgs + [{"role": "assistant", "content": "The sea is"}]
    with client() as hc:
        cont = hc.post(srv.url + "/tokenize", json={"messages": prefilled, "continue_final_message": True}).json()
    on = c.chat.completions.create(model=m, messages=prefilled, max_tokens=8, temperature=0,
                                   extra_body={"continue_final_message": True, "ignore_eos": True})
    plain = c.completions.create(model=m, prompt=cont["tokens"], max_tokens=8, temperature=0,
                                 extra_body={"ignore_eos": True})
    check(cont["count"] == on.usage.prompt_tokens and on.choices[0].message.content == plain.choices[0].text
          and detokenize(srv, cont["tokens"]).endswith("assistant\nThe sea is"),
          "chat continue_final_message: the prompt ends inside the prefilled reply; the answer is completions' on it",
          short([cont, on, plain]))
    # vLLM's chat echo: the answer starts with the reply the client began, whole and streamed
    echoed = c.chat.completions.create(model=m, messages=prefilled, max_tokens=8, temperature=0,
                                       extra_body={"continue_final_message": True, "ignore_eos": True, "echo": True})
    pieces = list(c.chat.completions.create(model=m, messages=prefilled, max_tokens=8, temperature=0, stream=True,
                                            extra_body={"continue_final_message": True, "ignore_eos": True,
                                                        "echo": True}))
    joined = "".join(k.choices[0].delta.content or "" for k in pieces if k.choices)
    check(echoed.choices[0].message.content == "The sea is" + on.choices[0].message.content and joined ==
          echoed.choices[0].message.content and echoed.usage.completion_tokens == on.usage.completion_tokens,
          "chat echo: the content is the prefilled reply, then the answer (streamed too); usage counts the answer",
          short([echoed, joined]))
    # chat n=2: two messages; streamed, a role chunk and the content under each index
    two = c.chat.completions.create(model=m, messages=msgs, max_tokens=8, temperature=0.9, seed=3, n=2,
                                    extra_body={"ignore_eos": True})
    s = stream(srv, "/v1/chat/completions", {"model": m, "messages": msgs, "max_tokens": 8, "temperature": 0.9,
                                             "seed": 3, "n": 2, "ignore_eos": True})
    roles, per = {}, {}
    for e in s.chunks():
        for x in e.get("choices") or []:
            d = x.get("delta") or {}
            if "role" in d:
                roles[x["index"]] = roles.get(x["index"], 0) + 1
            per[x["index"]] = per.get(x["index"], "") + (d.get("content") or "")
    check(len(two.choices) == 2 and [x.index for x in two.choices] == [0, 1] and two.usage.prompt_tokens == chat_count
          and two.usage.completion_tokens == 16 and roles == {0: 1, 1: 1}
          and per == {i: x.message.content for i, x in enumerate(two.choices)},
          "chat n=2: two messages, usage once for the prompt; streamed, one role chunk per index and the same content",
          short([two, s.events[:3]]))
    parts = [{"role": "user", "content": [{"type": "text", "text": "Tell me about the sea."}]}]
    rp = c.chat.completions.create(model=m, messages=parts, max_completion_tokens=16, temperature=0)
    check(rp.choices[0].message.content == cc.message.content,
          "chat: content as text parts, with max_completion_tokens, gives the same answer", short(rp))
    rd = c.chat.completions.create(model=m, messages=msgs, temperature=0, extra_body={"ignore_eos": True})
    check(rd.choices[0].finish_reason == "length" and rd.usage.total_tokens == CONTEXT,
          f"chat without max_tokens: the default fills the context ({rd.usage.prompt_tokens}+"
          f"{rd.usage.completion_tokens}, context {CONTEXT})", short(rd.usage))

    # logprobs: completions
    r = c.completions.create(model=m, prompt=prompt, max_tokens=8, temperature=0, logprobs=2,
                             extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    n = r.usage.completion_tokens
    ok = lp is not None and all(isinstance(x, list) and len(x) == n for x in
                                (lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset))
    check(ok and n == 8, f"completions logprobs=2: tokens, token_logprobs, top_logprobs, text_offset of {n} entries",
          short(lp))
    if ok:
        check(all(isinstance(t, str) for t in lp.tokens) and all(x <= 0 for x in lp.token_logprobs)
              and all(isinstance(d, dict) and 1 <= len(d) <= 2 for d in lp.top_logprobs)
              and all(b >= a for a, b in zip(lp.text_offset, lp.text_offset[1:])),
              "completions logprobs: strings, logprobs <= 0, at most 2 alternatives each, offsets non-decreasing",
              short(lp))
        check(all(abs(x - max(d.values())) < 1e-4 for x, d in zip(lp.token_logprobs, lp.top_logprobs)),
              "completions logprobs: at temperature 0 each chosen token is the most likely alternative", short(lp))
        s = stream(srv, "/v1/completions", {"model": m, "prompt": prompt, "max_tokens": 8, "temperature": 0,
                                            "logprobs": 2, "ignore_eos": True})
        toks, lps = s.logprob_tokens()
        check(toks == lp.tokens and len(lps) == n and all(abs(a - b) < 1e-5 for a, b in zip(lps, lp.token_logprobs)),
              "completions stream logprobs: the same tokens and logprobs as not streamed", f"{toks}\n{lp.tokens}")
    # logprobs: chat
    r = c.chat.completions.create(model=m, messages=msgs, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                                  extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content if r.choices[0].logprobs else None
    n = r.usage.completion_tokens
    check(content is not None and len(content) == n == 8, f"chat logprobs: one content entry per token ({n})",
          short(r.choices[0]))
    if content:
        check(all(isinstance(e.token, str) and e.logprob <= 0 and isinstance(e.bytes, list) and len(e.top_logprobs) == 2
                  and all(isinstance(t.token, str) and t.logprob <= 0 and isinstance(t.bytes, list)
                          for t in e.top_logprobs)
                  and e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob for e in content),
              "chat logprobs: token, logprob, bytes and 2 top_logprobs (token, logprob, bytes) each, most likely first",
              short(content))
        check(all(e.token == e.top_logprobs[0].token and abs(e.logprob - e.top_logprobs[0].logprob) < 1e-4
                  for e in content), "chat logprobs: at temperature 0 each chosen token is the top alternative",
              short(content))
        joined = bytes(b for e in content for b in (e.bytes or []))
        text = r.choices[0].message.content
        if "\ufffd" not in text:
            check(joined == text.encode(), "chat logprobs: the tokens' bytes joined are the content's UTF-8",
                  f"{joined!r} vs {text.encode()!r}")



# ---------------------------------------------------------------- b. greedy = tpserve generate


def generate(prompt, chat):
    cmd = [cfg.tpserve, "generate", "--model", str(FIXTURE), "--prompt", prompt, "-n", "24", "--max-context", "256",
           "--threads", "1"] + (["--chat"] if chat else [])
    r = subprocess.run(cmd, capture_output=True, timeout=120, env=ENV)
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0 or not out.endswith("\n"):
        check(False, f"tpserve generate {'--chat ' if chat else ''}runs", f"{cmd}\nrc {r.returncode}\n{out}\n"
              + r.stderr.decode(errors="replace"))
        return None
    return out[:-1]


def case_generate():
    srv = main_server()
    if not srv:
        return
    with client() as c:
        for prompt in ("Hello world", "def fib(n):", "Once upon a time, in a small village"):
            want = generate(prompt, chat=False)
            r = c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": prompt, "max_tokens": 24,
                                                          "temperature": 0}).json()
            got = r.get("choices", [{}])[0].get("text")
            if want is not None:
                check(got == want, f"completions = generate for {prompt!r}", f"server {got!r}\ngenerate {want!r}")
        for prompt in ("Hello world", "What is the capital of France?"):
            want = generate(prompt, chat=True)
            r = c.post(srv.url + "/v1/chat/completions", json={
                "model": srv.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 24,
                "temperature": 0}).json()
            got = r.get("choices", [{}])[0].get("message", {}).get("content")
            if want is not None:
                check(got == want, f"chat = generate --chat for {prompt!r}", f"server {got!r}\ngenerate {want!r}")



# ---------------------------------------------------------------- c. raw SSE framing with curl


def case_curl():
    srv = main_server()
    if not srv:
        return
    body = {"model": srv.model, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    try:
        r = subprocess.run(["curl", "-sN", "-i", "--noproxy", "*", "-H", "Content-Type: application/json",
                            "-d", json.dumps(body), srv.url + "/v1/completions"], capture_output=True, timeout=60)
    except FileNotFoundError:
        check(False, "curl is installed", "curl is missing: run scripts/setup")
        return
    out = r.stdout
    head, sep, payload = out.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode(errors="replace")
    ctype = [ln.split(b":", 1)[1].strip().decode() for ln in head.split(b"\r\n")[1:]
             if ln.lower().startswith(b"content-type:")]
    check(r.returncode == 0 and " 200" in status, f"curl: {status}", short(out))
    check(ctype and ctype[0].startswith("text/event-stream"), f"curl: content-type {ctype}", short(head))
    events = payload.split(b"\n\n")
    check(events and events[-1] == b"", "curl: the body ends with a blank line", short(payload))
    events = events[:-1]
    bad = [e for e in events if not e.startswith(b"data: ") or b"\n" in e or b"\r" in e]
    check(events and not bad, f"curl: every one of {len(events)} events is one `data: ...` line and a blank line",
          short(bad or payload))
    check(events and events[-1] == b"data: [DONE]", "curl: the last event is `data: [DONE]`", short(events[-2:]))
    try:
        parsed = [json.loads(e[6:]) for e in events[:-1]]
    except ValueError:
        parsed = None
    check(parsed and all(p.get("object") == "text_completion" for p in parsed),
          "curl: every other event is a JSON text_completion chunk", short(payload))
    if parsed:
        text = "".join(ch.get("text", "") for p in parsed for ch in p.get("choices", []))
        with client() as c:
            plain = c.post(srv.url + "/v1/completions", json={k: v for k, v in body.items()
                                                              if k not in ("stream", "stream_options")}).json()
        check(text == plain["choices"][0]["text"] and parsed[-1].get("usage") == plain.get("usage"),
              "curl: the events' text and usage are the non-streamed ones", f"{text!r}\n{short(plain)}")
    keep_alive_first_chunk(srv)


def keep_alive_first_chunk(srv):
    """Streams four times on one keep-alive connection and times the first event of each. The model
    makes a token in well under a millisecond; a socket left with Nagle's algorithm on holds every
    event after the headers until the client's delayed ACK, 40 ms later, then sends them in a burst
    (a fresh connection hides it: Linux ACKs its first segments at once)."""
    body = json.dumps({"model": srv.model, "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0,
                       "stream": True}).encode()
    firsts = []
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        f = sock.makefile("rb")
        for _ in range(4):
            t0 = time.monotonic()
            seen = []

            def first_event(piece):
                if b"data: {" in piece and not seen:
                    seen.append(time.monotonic() - t0)

            sock.sendall(http_bytes("POST", "/v1/completions", body, keep_alive=True))
            status, headers, got = read_response(f, on_piece=first_event)
            if status != 200 or not seen or headers.get("connection", "").lower() == "close":
                check(False, "keep-alive: a stream on a keep-alive connection", f"{status} {headers} {short(got)}")
                return
            firsts.append(seen[0] * 1e3)
    reused = sorted(firsts[1:])[1]
    check(reused < 30, f"keep-alive: on a reused connection the first event comes at once (median {reused:.1f} ms; "
          f"all: {', '.join(f'{x:.1f}' for x in firsts)} ms)",
          "40 ms is Nagle's algorithm waiting on the client's delayed ACK: set TCP_NODELAY on accepted sockets")



# ---------------------------------------------------------------- g. metrics


HISTOGRAMS = ("tpserve_time_to_first_token_seconds", "tpserve_inter_token_latency_seconds",
              "tpserve_request_latency_seconds")
COUNTERS = ("tpserve_requests_total", "tpserve_requests_rejected_total", "tpserve_prompt_tokens_total",
            "tpserve_generation_tokens_total", "tpserve_steps_total", "tpserve_step_seconds_total",
            "tpserve_collective_seconds_total")
GAUGES = ("tpserve_requests_running", "tpserve_requests_waiting", "tpserve_kv_cache_usage_ratio",
          "tpserve_kv_cache_tokens", "tpserve_rank_memory_bytes")


def case_metrics():
    srv = main_server()
    if not srv:
        return
    stream(srv, "/v1/completions", {"model": srv.model, "prompt": "Some traffic", "max_tokens": 8, "temperature": 0})
    with client() as c:
        c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": "More", "max_tokens": 4})
        c.post(srv.url + "/v1/completions", json={"model": srv.model, "prompt": "x", "max_tokens": 0})
    r, m = metrics(srv)
    check(r.status_code == 200 and r.headers.get("content-type", "").startswith("text/plain"),
          f"metrics: 200 text/plain ({r.headers.get('content-type')})")
    try:
        p = subprocess.run(["promtool", "check", "metrics"], input=r.content, capture_output=True, timeout=60)
        check(p.returncode == 0, "metrics: promtool check metrics passes",
              (p.stdout + p.stderr).decode(errors="replace") + "\n" + short(r.text, 3000))
    except FileNotFoundError:
        check(False, "metrics: promtool is installed", "promtool is missing (Debian's prometheus): run scripts/setup")
    types = m[1]
    for names, want in ((HISTOGRAMS, "histogram"), (COUNTERS, "counter"), (GAUGES, "gauge")):
        wrong = [n for n in names if types.get(n) != want]
        check(not wrong, f"metrics: every documented {want} is there with its TYPE",
              "missing or wrong: " + ", ".join(f"{n} ({types.get(n)})" for n in wrong))
    for h in HISTOGRAMS:
        count = metric(m, h + "_count")
        inf = metric(m, h + "_bucket", le="+Inf")
        buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in m[0].items() if n == h + "_bucket")
        mono = all(b[1] >= a[1] for a, b in zip(buckets, buckets[1:]))
        check(count and count > 0 and inf == count and mono and (metric(m, h + "_sum") or 0) > 0,
              f"metrics: {h} has count {count} > 0, cumulative buckets, +Inf = count, sum > 0", short(buckets))
    for name, labels in (("tpserve_generation_tokens_total", {}), ("tpserve_prompt_tokens_total", {}),
                         ("tpserve_steps_total", {}), ("tpserve_kv_cache_tokens", {"state": "capacity"}),
                         ("tpserve_requests_total", {"outcome": "length"}),
                         ("tpserve_requests_rejected_total", {"reason": "invalid"}),
                         ("tpserve_rank_memory_bytes", {"rank": "0", "category": "total", "source": "predicted"}),
                         ("tpserve_rank_memory_bytes", {"rank": "0", "category": "total", "source": "actual"})):
        v = metric(m, name, **labels)
        check(v is not None and v > 0, f"metrics: {name}{labels or ''} = {v} > 0")



# ---------------------------------------------------------------- h. errors


def case_errors():
    srv = main_server()
    if not srv:
        return
    m = srv.model
    url = srv.url
    with client() as c:
        def post(path, content):
            r = c.post(url + path, content=content, headers={"Content-Type": "application/json"})
            return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

        def body(**kw):
            return json.dumps({"model": m, "prompt": "Hello", "max_tokens": 4, **kw}).encode()

        bad = [
            ("malformed JSON", "/v1/completions", b'{"model": nope}'),
            ("truncated JSON", "/v1/completions", body()[:-3]),
            ("max_tokens \"x\"", "/v1/completions", body(max_tokens="x")),
            ("temperature \"hot\"", "/v1/completions", body(temperature="hot")),
            ("messages 3", "/v1/chat/completions", json.dumps({"model": m, "messages": 3}).encode()),
            ("max_tokens 0", "/v1/completions", body(max_tokens=0)),
            ("max_tokens -1", "/v1/completions", body(max_tokens=-1)),
            ("temperature -1", "/v1/completions", body(temperature=-1)),
            ("tool_choice required without tools", "/v1/chat/completions",
             json.dumps({"model": m, "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}).encode()),
            ("tools not a list", "/v1/chat/completions",
             json.dumps({"model": m, "messages": [{"role": "user", "content": "x"}], "tools": {"f": 1}}).encode()),
            ("chat echo not a boolean", "/v1/chat/completions",
             json.dumps({"model": m, "messages": [{"role": "user", "content": "x"}], "echo": "yes"}).encode()),
            ("n 0", "/v1/completions", body(n=0)),
            ("n 129", "/v1/completions", body(n=129)),
            ("best_of 3 with n 2", "/v1/completions", body(n=2, best_of=3)),
            ("10000 nested '['", "/v1/completions", b"[" * 10000),
            ("10000 nested '[' in the prompt", "/v1/completions", b'{"prompt": ' + b"[" * 10000 + b"}"),
            ("max_tokens 1e400", "/v1/completions", body(max_tokens=0)[:-2] + b"1e400}"),
            ("max_tokens 99999999999999999999999", "/v1/completions",
             body(max_tokens=0)[:-2] + b"99999999999999999999999}"),
            ("temperature 1e400", "/v1/completions", body(temperature=0)[:-2] + b"1e400}"),
        ]
        for what, path, content in bad:
            check_error(what, *post(path, content), 400, "invalid_request_error")

        words = "the lighthouse keeper watched the grey sea and counted ships "
        long = words * 40
        n = tokenize(srv, long)["count"]
        e = check_error(f"a prompt of {n} tokens (context {CONTEXT})", *post("/v1/completions", body(prompt=long)),
                        400, "invalid_request_error", code="context_length_exceeded")
        if e:
            check(str(n) in e["message"] and str(CONTEXT) in e["message"],
                  f"a prompt too long: the message names {n} and {CONTEXT}", e["message"])
        mid = words
        while tokenize(srv, mid)["count"] < 60:  # a prompt that fits, but not with 200 more tokens
            mid += words
        k = tokenize(srv, mid)["count"]
        e = check_error(f"a prompt of {k} tokens with max_tokens 200 (context {CONTEXT})",
                        *post("/v1/completions", body(prompt=mid, max_tokens=200)), 400, "invalid_request_error")
        if e:
            check(str(CONTEXT) in e["message"] and ("200" in e["message"] or str(k + 200) in e["message"]),
                  "max_tokens that does not fit: the message names the numbers", e["message"])

        # more choices than the batch and the queue hold (8 + 64): waiting would not help, so 400, not 429
        e = check_error("n 100 (--max-batch 8, --max-queue 64)", *post("/v1/completions", body(n=100)), 400,
                        "invalid_request_error")
        if e:
            check("72" in e["message"] and "--max-batch" in e["message"],
                  "n above what the server holds: the message names the limit and the flags", e["message"])

        check_error("an unknown model", *post("/v1/completions", body(model="no-such-model")), 404,
                    "not_found_error", code="model_not_found")
        check_error("an unknown path", *post("/v1/nothing", body()), 404, "not_found_error")
        r = c.get(url + "/v1/completions")
        check_error("GET /v1/completions", r.status_code, r.headers, r.content, 405, "invalid_request_error")
        check("POST" in r.headers.get("allow", ""), f"GET /v1/completions: Allow {r.headers.get('allow')!r}")

    small = Server(["--model", str(FIXTURE), *SMALL, "--max-body-bytes", "4096", "--log-requests", "--log-stats-interval", "1",
                    "--served-model-name", "tiny,tiny-alias"])
    if small.start():
        big = body(prompt="x" * 5000)
        check_error(f"a body of {len(big)} bytes (--max-body-bytes 4096)",
                    *raw(small, http_bytes("POST", "/v1/completions", big)), 413, "invalid_request_error")
        status, _, b = raw(small, http_bytes("POST", "/v1/messages", big))
        try:
            shape = json.loads(b)
        except ValueError:
            shape = None
        check(status == 413 and isinstance(shape, dict) and shape.get("type") == "error"
              and shape.get("error", {}).get("type") == "request_too_large",
              "the same body to /v1/messages: 413 in Anthropic's shape (request_too_large)", short(b))
        fits = body(model="tiny", user="x" * 3000)  # an accepted, unused field
        status, _, b = raw(small, http_bytes("POST", "/v1/completions", fits))
        check(status == 200, f"a body of {len(fits)} bytes (--max-body-bytes 4096): 200 (got {status})", short(b))
        answer = json.loads(b) if status == 200 else {}
        usage = answer.get("usage", {})
        finish = (answer.get("choices") or [{}])[0].get("finish_reason")
        # a stats line comes within --log-stats-interval 1 of the traffic (waited for longer: a loaded
        # machine may run the timer late)
        end = time.monotonic() + 15
        while time.monotonic() < end and not any("generation" in line and "tokens/s" in line for line in small.out):
            time.sleep(0.1)
        lines = [line for line in small.out if line.startswith("tpserve serve: ")]
        answered = '"POST /v1/completions" 200'
        check(any('"POST /v1/completions" 413' in line for line in lines)
              and any('"POST /v1/messages" 413' in line for line in lines)
              and any(answered in line and f"prompt {usage.get('prompt_tokens')} (0 cached), output "
                      f"{usage.get('completion_tokens')}" in line and f"finish {finish}" in line for line in lines),
              "--log-requests: a line per request (client, method, path, status, time; a generation's tokens, as its "
              "usage, and finish)", "".join(small.out))
        check(any("generation" in line and "tokens/s" in line and "running" in line for line in lines),
              "--log-stats-interval 1: a line of throughput and load while there is work", "".join(small.out))
        # --served-model-name tiny,tiny-alias: both names listed and answered, the answer saying the one asked for
        with client() as hc:
            listed = [d["id"] for d in hc.get(small.url + "/v1/models").json()["data"]]
            by_alias = hc.post(small.url + "/v1/completions", json={"model": "tiny-alias", "prompt": "Hi", "max_tokens": 2})
            retrieved = hc.get(small.url + "/v1/models/tiny-alias")
            other = hc.post(small.url + "/v1/completions", json={"model": "smollm2", "prompt": "Hi", "max_tokens": 2})
        check(listed == ["tiny", "tiny-alias"] and by_alias.status_code == 200 and by_alias.json()["model"] == "tiny-alias"
              and retrieved.status_code == 200 and retrieved.json()["id"] == "tiny-alias" and other.status_code == 404,
              "--served-model-name tiny,tiny-alias: /v1/models lists both; a request naming the alias is answered under "
              "it; any other name is 404", short([listed, by_alias.text, retrieved.text, other.status_code]))
    small.kill()
    status, headers, b = raw(srv, http_bytes("GET", "/health", headers=["X-Big: " + "a" * 17000]))
    check(status == 431, f"headers over 16 KiB: 431 (got {status})", f"{headers}\n{short(b)}")
    status, headers, b = raw(srv, http_bytes("POST", "/v1/completions", b'{"model": "' + m.encode()
                                             + b'", "prompt": "abc \xff\xfe\xc3 def", "max_tokens": 4}'))
    check(status in (200, 400), f"invalid UTF-8 in the prompt: 200 or 400 (got {status})", short(b))
    if status == 400:
        check_error("invalid UTF-8 in the prompt", status, headers, b, 400, "invalid_request_error")
    with client() as c:
        r = c.post(url + "/v1/completions", json={"model": m, "prompt": "Still there?", "max_tokens": 4})
    check(r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1,
          "after all the bad requests the server still answers a good one", r.text + "\n" + srv.log())



# ---------------------------------------------------------------- i. the small endpoints


def case_endpoints():
    srv = main_server()
    if not srv:
        return
    for status, text in srv.loading_bodies[:1]:
        check(status == 503 and '"loading"' in text, f"while loading /health is 503 loading (got {status} {text})")
    with client() as c:
        r = c.get(srv.url + "/health")
        check(r.status_code == 200 and r.json() == {"status": "ok"}, f"/health: 200 {r.text}")
        r = c.get(srv.url + "/v1/models").json()
        check(r.get("object") == "list" and len(r.get("data", [])) == 1 and r["data"][0].get("id") == "smollm2"
              and r["data"][0].get("object") == "model", "/v1/models: one model, id = the folder name", short(r))
        one = oai(srv).models.retrieve("smollm2")
        check(one.id == "smollm2" and one.object == "model" and one.created == r["data"][0]["created"]
              and one.owned_by == "tpserve" and one.model_extra.get("max_model_len") == 256,
              "/v1/models/smollm2: the openai client's models.retrieve gets the listed object", short(one))
        other = c.get(srv.url + "/v1/models/gpt-4")
        check(other.status_code == 404 and other.json()["error"]["code"] == "model_not_found",
              "/v1/models/gpt-4: 404 model_not_found", other.text)
        escaped = c.get(srv.url + "/v1/models/smollm%32")
        bad = c.get(srv.url + "/v1/models/smollm%2")
        check(escaped.status_code == 200 and escaped.json()["id"] == "smollm2" and bad.status_code == 404,
              "/v1/models/{id}: the id's %XX escapes are decoded (an 'org/name' id); a malformed one is 404",
              short([escaped.text, bad.text]))
        t = c.post(srv.url + "/tokenize", json={"prompt": "Hello world"}).json()
        toks = t.get("tokens")
        check(isinstance(toks, list) and toks and all(isinstance(x, int) for x in toks) and t.get("count") == len(toks)
              and t.get("max_model_len") == CONTEXT, f"/tokenize: tokens, count, max_model_len {CONTEXT}", short(t))
        d = c.post(srv.url + "/detokenize", json={"tokens": toks}).json()
        check(d.get("prompt") == "Hello world", "/detokenize: the tokens give back 'Hello world'", short(d))
        msgs = [{"role": "user", "content": "Hi there"}]
        t = c.post(srv.url + "/tokenize", json={"messages": msgs}).json()
        u = c.post(srv.url + "/v1/chat/completions", json={"model": srv.model, "messages": msgs,
                                                            "max_tokens": 1}).json()
        check(t.get("count") == u.get("usage", {}).get("prompt_tokens"),
              f"/tokenize messages: {t.get('count')} tokens, as chat's prompt_tokens", short(u))
        plan = c.get(srv.url + "/v1/plan")
        check(plan.status_code == 200, "/v1/plan: 200", plan.text)
        if plan.status_code == 200:
            check_plan(srv, plan.json(), 1, "one process")
        r = c.get(srv.url + "/")
        check(r.status_code == 200 and r.headers.get("content-type", "").startswith("text/html")
              and "<html" in r.text.lower() and "/v1/chat/completions" in r.text,
              f"GET /: an HTML chat page ({r.headers.get('content-type')}) using /v1/chat/completions", short(r.text))

