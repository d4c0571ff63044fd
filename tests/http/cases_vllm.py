"""vLLM's request fields beyond the OpenAI API (http_test.py), through the official openai client's
extra_body: each judged against a plain request it must equal in part (the same text with the
stop string after it, the same answer as the truncated prompt's), or against /tokenize."""
import subprocess

import openai

from harness import (FIXTURE, SMALL, Server, cfg, check, client, main_server, oai, reference_ranks, reference_scores, short,
                     tokenize)


def case_vllm_fields():
    srv = main_server()
    if not srv:
        return
    c = oai(srv)
    m = srv.model
    prompt = "The harbour at dawn was quiet, and the boats"
    plain = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    text = plain.choices[0].text
    stop = text[5:8] if len(text) >= 8 else None
    if stop:
        cut = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, stop=[stop],
                                   extra_body={"ignore_eos": True})
        kept = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, stop=[stop],
                                    extra_body={"ignore_eos": True, "include_stop_str_in_output": True})
        check(kept.choices[0].text == cut.choices[0].text + stop and kept.choices[0].text.endswith(stop)
              and kept.choices[0].finish_reason == "stop",
              f"include_stop_str_in_output: the text before the stop {stop!r}, then the stop", short([cut, kept]))
        check(cut.choices[0].model_extra.get("stop_reason") == stop and plain.choices[0].model_extra.get("stop_reason", 0) is None,
              f"stop_reason (vLLM's): the stop string {stop!r} that ended it; null for the length",
              short([cut.choices[0], plain.choices[0]]))

    # stop_token_ids: stop_reason names the token, whole and streamed (in the finish chunk)
    ids_out = c.completions.create(model=m, prompt=prompt, max_tokens=6, temperature=0, logprobs=0,
                                   extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True})
    third = int(ids_out.choices[0].logprobs.tokens[2].split(":")[1])
    by_token = c.completions.create(model=m, prompt=prompt, max_tokens=6, temperature=0, extra_body={"stop_token_ids": [third]})
    last = [k for k in c.completions.create(model=m, prompt=prompt, max_tokens=6, temperature=0, stream=True,
                                            extra_body={"stop_token_ids": [third]}) if k.choices][-1]
    check(by_token.choices[0].finish_reason == "stop" and by_token.choices[0].model_extra.get("stop_reason") == third
          and last.choices[0].finish_reason == "stop" and last.choices[0].model_extra.get("stop_reason") == third,
          f"stop_token_ids [{third}]: finish_reason stop, stop_reason {third}, whole and in the stream's finish chunk",
          short([by_token.choices[0], last.choices[0]]))

    # truncate_prompt_tokens: the answer of the prompt's last k tokens, sent as token ids
    ids = tokenize(srv, prompt)["tokens"]
    last = c.completions.create(model=m, prompt=ids[-5:], max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    trunc = c.completions.create(model=m, prompt=prompt, max_tokens=8, temperature=0,
                                 extra_body={"ignore_eos": True, "truncate_prompt_tokens": 5})
    check(trunc.usage.prompt_tokens == 5 and trunc.choices[0].text == last.choices[0].text,
          "truncate_prompt_tokens 5: five prompt tokens, and the answer of the last five", short([trunc, last]))

    # return_tokens_as_token_ids: log-probabilities name tokens by id, the ids of the text
    named = c.completions.create(model=m, prompt=prompt, max_tokens=6, temperature=0, logprobs=2,
                                 extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True, "skip_special_tokens": False})
    toks = named.choices[0].logprobs.tokens
    ok = all(t.startswith("token_id:") for t in toks) and all(
        k.startswith("token_id:") for top in named.choices[0].logprobs.top_logprobs for k in top)
    with client() as hc:
        said = hc.post(srv.url + "/detokenize", json={"tokens": [int(t.split(":")[1]) for t in toks]}).json()["prompt"]
    check(ok and said == named.choices[0].text,
          "return_tokens_as_token_ids: 'token_id:N' for every token, the ids /detokenize makes the text of",
          short(named.choices[0]))

    # prompt_logprobs: every prompt token after the first with the log-probability and rank that
    # transformers' logits give it, the prompt's token first, then the 3 most likely; the same
    # figures as echo's; chat's at the top of the response
    ids, want, best = reference_scores("long")
    ranks = reference_ranks("long")
    with client() as hc:
        r = hc.post(srv.url + "/v1/completions", json={"model": m, "prompt": ids, "max_tokens": 2, "temperature": 0,
                                                       "prompt_logprobs": 3, "ignore_eos": True}).json()
        alone = hc.post(srv.url + "/v1/completions", json={"model": m, "prompt": ids, "max_tokens": 2, "temperature": 0,
                                                           "ignore_eos": True}).json()
        names = {t: hc.post(srv.url + "/detokenize", json={"tokens": [t]}).json()["prompt"] for t in ids[1:6]}
    pl = ((r.get("choices") or [{}])[0]).get("prompt_logprobs") or []
    ok = len(pl) == len(ids) and pl[0] is None
    worst, ranked = 0.0, 0
    for i in range(1, len(pl) if ok else 0):
        at = pl[i]
        own = at.get(str(ids[i])) or {}
        keys = list(at)
        alt_ranks = sorted(at[k]["rank"] for k in keys[1:])  # (the prompt's token is not repeated)
        ok = ok and keys[0] == str(ids[i]) and 3 <= len(at) <= 4 and abs(max(v["logprob"] for v in at.values()) - best[i]) < 1e-4
        ok = ok and own.get("rank", 0) >= 1 and (ranks[i] is None or own["rank"] == ranks[i])
        ok = ok and len(set(alt_ranks)) == len(alt_ranks) == len(at) - 1 and set(alt_ranks) <= {1, 2, 3}
        ok = ok and (ids[i] not in names or own.get("decoded_token") == names[ids[i]])
        worst = max(worst, abs(own.get("logprob", 1e9) - want[i]))
        ranked += ranks[i] is not None
    check(ok and worst < 1e-4 and ranked > len(ids) // 2
          and r["choices"][0]["text"] == alone["choices"][0]["text"],
          f"prompt_logprobs 3 on the {len(ids)}-token 'long' prompt: each token's logprob as transformers' logits give "
          f"it (largest difference {worst:.1e}), its rank as theirs ({ranked} compared), then the 3 most likely; the "
          "output unchanged", short(pl[:3]))
    msgs = [{"role": "user", "content": prompt}]
    chat = c.chat.completions.create(model=m, messages=msgs, max_tokens=1, temperature=0, extra_body={"prompt_logprobs": 0})
    ctoks = tokenize(srv, None, messages=msgs)["tokens"]
    cpl = chat.model_extra.get("prompt_logprobs") or []
    echo = c.completions.create(model=m, prompt=ctoks, max_tokens=0, echo=True, logprobs=0)
    check(len(cpl) == len(ctoks) and cpl[0] is None and all(list(e) == [str(t)] for e, t in zip(cpl[1:], ctoks[1:]))
          and all(abs(e[str(t)]["logprob"] - x) < 1e-5 for e, t, x in zip(cpl[1:], ctoks[1:],
                                                                          echo.choices[0].logprobs.token_logprobs[1:])),
          "chat prompt_logprobs 0: the response's list, one entry per token /tokenize renders (the token alone), the "
          "logprobs completions' echo gives them", short(cpl[:3]))

    # priority: a 400 under first come, first served; with --scheduling-policy priority it orders the
    # queue (scheduler_test holds the order) and changes no answer
    try:
        c.completions.create(model=m, prompt=prompt, max_tokens=2, extra_body={"priority": 1})
        check(False, "priority 1 under fcfs is refused")
    except openai.BadRequestError as e:
        check("--scheduling-policy priority" in str(e), "priority 1 under fcfs: a 400 naming --scheduling-policy", str(e))
    bad = subprocess.run([cfg.tpserve, "serve", "--model", str(FIXTURE), "--scheduling-policy", "lifo"], capture_output=True,
                         text=True, timeout=60)
    check(bad.returncode != 0 and "--scheduling-policy: 'lifo' is not fcfs or priority" in bad.stderr,
          "--scheduling-policy lifo: the server refuses to start, naming the flag", bad.stderr[-300:])
    ps = Server(["--model", str(FIXTURE), *SMALL, "--scheduling-policy", "priority"])
    if ps.start():
        try:
            pc = oai(ps)
            urgent = [pc.completions.create(model=ps.model, prompt=prompt, max_tokens=8, temperature=0,
                                            extra_body={"ignore_eos": True, "priority": p}) for p in (-5, 7)]
            eight = c.completions.create(model=m, prompt=prompt, max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
            check(all(u.choices[0].text == eight.choices[0].text and u.usage.completion_tokens == 8 for u in urgent),
                  "--scheduling-policy priority: requests with priority -5 and 7 get the greedy answer", short(urgent))
        finally:
            ps.kill()

    # stream_options.continuous_usage_stats: every chunk carries its choice's usage so far; the last
    # chunk still the whole request's
    chunks = list(c.chat.completions.create(
        model=m, messages=[{"role": "user", "content": prompt}], max_tokens=6, temperature=0.8, seed=1, n=2, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}, extra_body={"ignore_eos": True}))
    seen = {0: [], 1: []}
    for k in chunks[:-1]:
        seen[k.choices[0].index].append((k.usage.prompt_tokens, k.usage.completion_tokens) if k.usage else None)
    end = chunks[-1].usage
    per_choice_ok = all(
        v and None not in v and v[0][1] == 0 and v[-1][1] == 6 and all(a[1] <= b[1] for a, b in zip(v, v[1:]))
        and {p for p, _ in v} == {end.prompt_tokens} for v in seen.values())
    check(per_choice_ok and not chunks[-1].choices and end.completion_tokens == 12,
          "continuous_usage_stats: each choice's chunks count 0 (role), then up to its 6 tokens; the last chunk "
          "counts the request", short([seen, end]))

    # allowed_token_ids and bad_words: what comes is only what is allowed, never the bad word
    allow = ids[:4]
    only = c.completions.create(model=m, prompt=prompt, max_tokens=12, temperature=1.0, seed=3,
                                extra_body={"ignore_eos": True, "allowed_token_ids": allow, "return_tokens_as_token_ids": True},
                                logprobs=0)
    got = [int(t.split(":")[1]) for t in only.choices[0].logprobs.tokens]
    check(got and all(t in allow for t in got), f"allowed_token_ids: every token among {allow}", short(got))
    # bad_words, as vLLM reads them: the word's tokens, and " word"'s when that is another first token
    # in as many tokens. A token of the greedy answer that is a whole word, so spelled, is banned: the
    # answer changes and never holds it.
    greedy = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, logprobs=0,
                                  extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True, "skip_special_tokens": False})
    before = [int(t.split(":")[1]) for t in greedy.choices[0].logprobs.tokens]
    word, spellings = None, []
    with client() as hc:
        for t in before:
            w = hc.post(srv.url + "/detokenize", json={"tokens": [t]}).json()["prompt"]
            if not w.strip().isalpha():
                continue
            plain = tokenize(srv, w.strip(), add_special_tokens=False)["tokens"]
            spaced = tokenize(srv, " " + w.strip(), add_special_tokens=False)["tokens"]
            spellings = [plain] + ([spaced] if spaced[0] != plain[0] and len(spaced) == len(plain) else [])
            if [t] in spellings:
                word = w.strip()
                break
    if word is None:
        return check(False, "bad_words: the fixture's greedy answer has a whole-word token to ban", short(before))
    banned = c.completions.create(model=m, prompt=prompt, max_tokens=24, temperature=0, logprobs=0,
                                  extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True, "bad_words": [word]})
    got = [int(t.split(":")[1]) for t in banned.choices[0].logprobs.tokens]
    check(got != before and not any(sp[0] in got for sp in spellings if len(sp) == 1),
          f"bad_words [{word!r}]: the greedy answer held it, the answer now never does", short([spellings, before, got]))
