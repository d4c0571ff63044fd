"""Structured output through the HTTP API (http_test.py): what the official openai client and its
pydantic parsing, Python's json and re, and the jsonschema library make of tpserve's output when a
request asks for a format; and a reasoning model's output split into reasoning_content and content. The fixture model is random, so without the constraint none of these
outputs would parse: each one that does is the grammar's doing.
"""
import json
import math
import re
from typing import Literal

import anthropic
import jsonschema
import openai
from pydantic import BaseModel, Field

from harness import FIXTURE, SMALL, Server, check, client, main_server, oai, short, stream


class Pet(BaseModel):
    kind: Literal["cat", "dog", "hamster"]
    indoor: bool
    legs: int = Field(ge=0, le=8)
    tags: list[Literal["small", "loud", "old"]] = Field(max_length=3)


TREE = {
    "$defs": {"node": {"type": "object",
                       "properties": {"v": {"enum": [1, 2, 3]},
                                      "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 1}},
                       "required": ["v", "kids"]}},
    "$ref": "#/$defs/node",
}


def case_structured():
    srv = main_server()
    if not srv:
        return
    c = oai(srv)
    m = srv.model
    ask = [{"role": "user", "content": "Describe a pet."}]

    # the openai client's own parsing of a pydantic model (response_format json_schema, strict)
    parsed = []
    for seed in range(4):
        r = c.chat.completions.parse(model=m, messages=ask, response_format=Pet, max_tokens=180, temperature=1.0,
                                     seed=seed)
        parsed.append((r.choices[0].finish_reason, r.choices[0].message.parsed))
    check(all(f == "stop" and isinstance(p, Pet) for f, p in parsed),
          "json_schema: the openai client parses every output into the pydantic model", short(parsed))
    check(len({p.model_dump_json() for _, p in parsed}) > 1, "json_schema: different seeds give different objects",
          short(parsed))

    # several choices, each valid (jsonschema is the judge), streamed equal to not streamed
    body = {"model": m, "messages": ask, "max_tokens": 180, "temperature": 1.0, "seed": 7, "n": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "tree", "schema": TREE}}}
    r = c.chat.completions.create(**body)
    texts = [ch.message.content for ch in r.choices]
    valid = []
    for t in texts:
        try:
            jsonschema.validate(json.loads(t), TREE)
            valid.append(True)
        except (ValueError, jsonschema.ValidationError):
            valid.append(False)
    check(all(valid) and all(ch.finish_reason == "stop" for ch in r.choices),
          "json_schema with $ref recursion: n=3 choices, each valid under jsonschema", short(texts))
    s = stream(srv, "/v1/chat/completions", body)
    streamed = [""] * 3
    for e in s.chunks():
        for ch in e.get("choices") or []:
            streamed[ch["index"]] += (ch.get("delta") or {}).get("content") or ""
    check(streamed == texts, "json_schema streamed: the same texts, piece by piece", short((streamed, texts)))

    # any JSON object
    r = c.chat.completions.create(model=m, messages=ask, max_tokens=180, temperature=0.7, seed=3,
                                  response_format={"type": "json_object"})
    out = r.choices[0].message.content
    try:
        obj = json.loads(out)
    except ValueError:
        obj = None
    check(r.choices[0].finish_reason != "stop" or isinstance(obj, dict),
          "json_object: a JSON object whenever the output ended by itself", short(out))
    check(out.startswith("{"), "json_object: the output starts an object", short(out))

    # vLLM's guided_choice and guided_regex on completions; log-probabilities stay finite
    r = c.completions.create(model=m, prompt="The answer is", max_tokens=10, temperature=1.0, seed=1, n=6, logprobs=5,
                             extra_body={"guided_choice": ["yes", "no", "maybe later"]})
    got = [ch.text for ch in r.choices]
    finite = all(math.isfinite(v) for ch in r.choices for top in ch.logprobs.top_logprobs for v in top.values())
    check(all(t in ("yes", "no", "maybe later") for t in got) and all(ch.finish_reason == "stop" for ch in r.choices),
          f"guided_choice: every choice is one of the strings ({got})", short(r))
    check(finite, "guided_choice: every top log-probability is a finite number", short(r.choices[0].logprobs))
    pattern = r"[A-Z]{2}-\d{3}(x|yz)?"
    r = c.completions.create(model=m, prompt="Code:", max_tokens=12, temperature=1.0, seed=2, n=4,
                             extra_body={"guided_regex": pattern})
    got = [ch.text for ch in r.choices]
    check(all(re.fullmatch(pattern, t) for t in got), f"guided_regex: Python's re.fullmatch takes every output ({got})",
          short(r))
    r = c.completions.create(model=m, prompt="Code:", max_tokens=12, temperature=0, extra_body={
        "structured_outputs": {"choice": ["alpha", "beta"]}})
    check(r.choices[0].text in ("alpha", "beta"), "structured_outputs choice: one of the strings", short(r))
    # a GBNF grammar (llama.cpp's format) whose language Python's re can check too
    gbnf = 'root ::= item ("," item){0,3}\nitem ::= [a-c]{1,3} # letters\n  | "\\"" [0-9]{1,2} "\\""'
    same = r'(?:[a-c]{1,3}|"[0-9]{1,2}")(?:,(?:[a-c]{1,3}|"[0-9]{1,2}")){0,3}'
    r = c.completions.create(model=m, prompt="List:", max_tokens=24, temperature=1.0, seed=3, n=4,
                             extra_body={"guided_grammar": gbnf})
    got = [ch.text for ch in r.choices]
    check(all(re.fullmatch(same, t) for t in got), f"guided_grammar: Python's re.fullmatch takes every output ({got})",
          short(r))

    # forced tool calls: tool_choice "required" and a named function, read back by the openai client
    weather = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}, "days": {"type": "integer"}},
               "required": ["city", "days"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}},
             {"type": "function", "function": {"name": "get_time", "parameters": {
                 "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}]
    shapes = []
    for seed, choice in [(1, "required"), (2, "required"), (3, {"type": "function", "function": {"name": "get_time"}})]:
        r = c.chat.completions.create(model=m, messages=ask, tools=tools, tool_choice=choice, max_tokens=150,
                                      temperature=1.0, seed=seed)
        msg = r.choices[0].message
        calls = msg.tool_calls or []
        ok = r.choices[0].finish_reason == "tool_calls" and msg.content is None and bool(calls)
        for call in calls:
            fn = next((t["function"] for t in tools if t["function"]["name"] == call.function.name), None)
            try:
                jsonschema.validate(json.loads(call.function.arguments), fn["parameters"])
            except (TypeError, ValueError, jsonschema.ValidationError):
                ok = False
        if isinstance(choice, dict):
            ok = ok and len(calls) == 1 and calls[0].function.name == "get_time"
        shapes.append((ok, [(k.function.name, k.function.arguments) for k in calls]))
    check(all(ok for ok, _ in shapes),
          "tool_choice required / named: tool_calls whose arguments jsonschema accepts under the function's parameters",
          short(shapes))
    ones = [c.chat.completions.create(model=m, messages=ask, tools=tools, tool_choice="required", max_tokens=150,
                                      temperature=1.0, seed=seed, parallel_tool_calls=False).choices[0].message.tool_calls
            for seed in (1, 2, 3)]
    check(all(k is not None and len(k) == 1 for k in ones),
          "tool_choice required, parallel_tool_calls false: exactly one call each time", short(ones))
    # strict function calling with tool_choice auto needs a format the calls are read in (hermes,
    # llama3_json): this fixture's calls are not read at all, so strict cannot be kept, and says so
    strict_tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather, "strict": True}}]
    try:
        c.with_options(max_retries=0).chat.completions.create(model=m, messages=ask, tools=strict_tools, max_tokens=4)
        check(False, "strict tools where no calls are read: refused", "accepted")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check(body.get("param") == "tools" and "'strict'" in body.get("message", ""),
              "strict tools where no calls are read: a 400 naming 'tools' and strict", str(e))
    # streamed, a call comes as OpenAI's does: id, type and name first, then its arguments piece by piece
    whole = c.chat.completions.create(model=m, messages=ask, tools=tools, tool_choice="required", max_tokens=150,
                                      temperature=1.0, seed=1).choices[0].message.tool_calls
    chunks = list(c.chat.completions.create(model=m, messages=ask, tools=tools, tool_choice="required", max_tokens=150,
                                            temperature=1.0, seed=1, stream=True))
    got, pieces, heads_ok = {}, 0, True
    for ch in chunks:
        for d in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            if d.index not in got:
                heads_ok = heads_ok and bool(d.id) and d.type == "function" and bool(d.function.name)
                got[d.index] = [d.function.name, ""]
            else:
                heads_ok = heads_ok and d.id is None and d.function.name is None
            got[d.index][1] += d.function.arguments or ""
            pieces += 1
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    check(heads_ok and [tuple(got[i]) for i in sorted(got)] == [(k.function.name, k.function.arguments) for k in whole or []]
          and pieces > len(got) and finishes == ["tool_calls"],
          "streamed forced calls: each call's first delta has id, type and name, its arguments follow in pieces, and "
          "they add up to the whole answer's calls", short([got, pieces, finishes]))

    # structural tags (xgrammar's format): free text, and a tag holding JSON where a trigger is written.
    # Python's json and jsonschema judge each tag; the rest is read as xgrammar's tests read it.
    weather = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                "days": {"type": "integer", "minimum": 1, "maximum": 7}},
               "required": ["city", "days"]}

    def tags_in(text, trigger, begin, end, schema):
        """The tags of a triggered_tags text (each trigger opens one), or None if one is malformed."""
        found, at = [], 0
        while (i := text.find(trigger, at)) >= 0:
            if not text.startswith(begin, i):
                return None
            try:
                obj, j = json.JSONDecoder().raw_decode(text, i + len(begin))
                jsonschema.validate(obj, schema)
            except (ValueError, jsonschema.ValidationError):
                return None
            if not text.startswith(end, j):
                return None
            found.append(obj)
            at = j + len(end)
        return found

    one_tag = {"type": "structural_tag", "format": {
        "type": "triggered_tags", "triggers": ["<weather"], "at_least_one": True, "stop_after_first": True,
        "tags": [{"type": "tag", "begin": "<weather>", "content": {"type": "json_schema", "json_schema": weather},
                  "end": "</weather>"}]}}
    r = c.chat.completions.create(model=m, messages=ask, max_tokens=120, temperature=1.0, seed=11, n=3,
                                  response_format=one_tag)
    outs = [(ch.message.content, ch.finish_reason) for ch in r.choices]
    check(all(f == "stop" and t.startswith("<weather>") and t.endswith("</weather>")
              and len(tags_in(t, "<weather", "<weather>", "</weather>", weather) or []) == 1 for t, f in outs),
          "structural_tag (triggered_tags, at_least_one, stop_after_first): each of 3 choices is one tag whose JSON "
          "jsonschema takes, and nothing else", short(outs))
    s = stream(srv, "/v1/chat/completions", {"model": m, "messages": ask, "max_tokens": 120, "temperature": 1.0, "seed": 11,
                                             "n": 3, "response_format": one_tag})
    streamed = [""] * 3
    for e in s.chunks():
        for ch in e.get("choices") or []:
            streamed[ch["index"]] += (ch.get("delta") or {}).get("content") or ""
    check(streamed == [t for t, _ in outs], "structural_tag streamed: the same texts", short((streamed, outs)))
    # free text first, then tags: vLLM's older shape, as structured_outputs' JSON text on completions
    legacy = {"type": "structural_tag", "triggers": ["<f"],
              "structures": [{"begin": "<f>", "schema": weather, "end": "</f>"}]}
    fmt = {"type": "sequence", "elements": [
        {"type": "const_string", "value": "Forecast: "},
        {"type": "triggered_tags", "triggers": ["<f"], "at_least_one": True,
         "tags": [{"begin": "<f>", "content": {"type": "json_schema", "json_schema": weather}, "end": "</f>"}]}]}
    r = c.completions.create(model=m, prompt="The weather:", max_tokens=80, temperature=1.0, seed=4, n=3,
                             extra_body={"structured_outputs": {"structural_tag": json.dumps({"format": fmt})}})
    texts = [ch.text for ch in r.choices]
    check(all(t.startswith("Forecast: <f>") and tags_in(t[len("Forecast: "):], "<f", "<f>", "</f>", weather) is not None
              for t in texts),
          "structural_tag (sequence, then triggered_tags) as structured_outputs' JSON text: the prefix, then a tag, "
          "then free text in which every '<f' opens a valid tag", short(texts))
    r = c.completions.create(model=m, prompt="The weather:", max_tokens=40, temperature=1.0, seed=5,
                             extra_body={"response_format": legacy})
    check(r.choices[0].finish_reason in ("stop", "length")
          and tags_in(r.choices[0].text, "<f", "<f>", "</f>", weather) is not None,
          "structural_tag, vLLM's older shape (structures and triggers): accepted, and every '<f' opens a valid tag",
          short(r))

    # what cannot be enforced is a 400 naming it
    for what, extra, words in [
            ("a tag no trigger starts", {"response_format": {"type": "structural_tag", "format": {
                "type": "triggered_tags", "triggers": ["<f"], "tags": [
                    {"begin": "<g>", "content": {"type": "any_text"}, "end": "</g>"}]}}},
             "format.tags[0]: its begin '<g>' starts with none of the triggers"),
            ("a schema keyword", {"response_format": {"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "integer", "multipleOf": 3}}}}, "'multipleOf' at # is not supported"),
            ("a broken regex", {"guided_regex": "(ab"}, "guided_regex"),
            ("a broken grammar", {"guided_grammar": 'root ::= "a" ("b"'}, "'guided_grammar': GBNF: line 1, column 14"),
            ("two formats", {"guided_choice": ["a"], "response_format": {"type": "json_object"}}, "both ask")]:
        try:
            c.chat.completions.create(model=m, messages=ask, max_tokens=5, extra_body=extra)
            check(False, f"refused: {what}")
        except openai.BadRequestError as e:
            check(words in str(e), f"refused with a 400: {what}", str(e))


def case_reasoning():
    """--reasoning-parser deepseek_r1 on the fixture: its random text never writes </think>, so every
    answer is thoughts (content null) and an output format waits for them; a prompt that closes the
    thoughts itself gets the format at once."""
    srv = Server(["--model", str(FIXTURE), *SMALL, "--reasoning-parser", "deepseek_r1", "--tool-call-parser", "hermes"])
    if not srv.start():
        return
    try:
        check(any("read as <think> reasoning" in line for line in srv.out),
              "the server says chat output is read as reasoning, then the answer", srv.log())
        c = oai(srv)
        m = srv.model
        ask = [{"role": "user", "content": "What is 2+2?"}]
        r = c.chat.completions.create(model=m, messages=ask, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
        msg = r.choices[0].message
        thoughts = (msg.model_extra or {}).get("reasoning_content")
        check(msg.content is None and isinstance(thoughts, str) and thoughts and r.choices[0].finish_reason == "length"
              and r.usage.completion_tokens_details.reasoning_tokens == 12,
              "thoughts that never end: reasoning_content holds them, content is null, all 12 tokens are reasoning_tokens",
              short(r))
        chunks = list(c.chat.completions.create(model=m, messages=ask, max_tokens=12, temperature=0, stream=True,
                                                extra_body={"ignore_eos": True}))
        streamed = "".join((k.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for k in chunks if k.choices)
        content = "".join(k.choices[0].delta.content or "" for k in chunks if k.choices)
        check(streamed == thoughts and content == "", "streamed: the same thoughts as reasoning_content deltas, no content",
              short(chunks[:3]))
        free = c.chat.completions.create(model=m, messages=ask, max_tokens=10, temperature=1.0, seed=5,
                                         extra_body={"guided_choice": ["yes", "no"]})
        ft = (free.choices[0].message.model_extra or {}).get("reasoning_content") or ""
        check(free.choices[0].message.content is None and ft not in ("yes", "no") and len(ft) > 3,
              "guided_choice waits for the thoughts: they are free text", short(free))
        closed = ask + [{"role": "assistant", "content": "<think>\n\n</think>\n\n"}]
        now = c.chat.completions.create(model=m, messages=closed, max_tokens=10, temperature=1.0, seed=5,
                                        extra_body={"guided_choice": ["yes", "no"], "continue_final_message": True})
        nm = now.choices[0].message
        check(nm.content in ("yes", "no") and (nm.model_extra or {}).get("reasoning_content", "x") is None,
              "a prompt that closes the thoughts gets the format at once, and no reasoning_content", short(now))
        # a thinking budget (vLLM's thinking_token_budget): the thoughts end, forced, after that many
        # tokens (the same first tokens as without one), and the answer follows, a format's too
        first = c.chat.completions.create(model=m, messages=ask, max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
        t4 = (first.choices[0].message.model_extra or {}).get("reasoning_content")
        cut = c.chat.completions.create(model=m, messages=ask, max_tokens=12, temperature=0,
                                        extra_body={"ignore_eos": True, "thinking_token_budget": 4})
        cm = cut.choices[0].message
        with client() as hc:
            end_tokens = hc.post(srv.url + "/tokenize", json={"prompt": "</think>", "add_special_tokens": False}).json()
        check((cm.model_extra or {}).get("reasoning_content") == t4 and cm.content is not None
              and cut.usage.completion_tokens == 12
              and cut.usage.completion_tokens_details.reasoning_tokens == 4 + len(end_tokens.get("tokens", [])),
              "thinking_token_budget 4: the first 4 tokens are the thoughts, then they end (reasoning_tokens: those and "
              "the tokens of </think>) and the answer follows", short([first, cut, end_tokens]))
        fmt_cut = c.chat.completions.create(model=m, messages=ask, max_tokens=40, temperature=1.0, seed=5,
                                            extra_body={"guided_choice": ["yes", "no"], "thinking_token_budget": 3})
        check(fmt_cut.choices[0].message.content in ("yes", "no"),
              "thinking_token_budget with guided_choice: the format follows the forced end of the thoughts", short(fmt_cut))
        # strict tools on a model that writes calls in tags: the grammar waits for the thoughts (here
        # ended by a budget), and whatever calls come are the schema's
        weather = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}}, "required": ["city"],
                   "additionalProperties": False}
        st = c.chat.completions.create(model=m, messages=ask, max_tokens=16, temperature=1.0, seed=2,
                                       tools=[{"type": "function", "function": {"name": "w", "parameters": weather, "strict": True}}],
                                       extra_body={"thinking_token_budget": 2})
        sm = st.choices[0].message
        calls_ok = True
        for call in sm.tool_calls or []:
            try:
                jsonschema.validate(json.loads(call.function.arguments), weather)
            except (TypeError, ValueError, jsonschema.ValidationError):
                calls_ok = call is sm.tool_calls[-1] and st.choices[0].finish_reason == "length"  # (cut short)
        check(calls_ok and (sm.model_extra or {}).get("reasoning_content") is not None
              and (sm.content is not None or sm.tool_calls),
              "strict tools after thoughts: served, the thoughts end at the budget, calls (if any) follow the schema",
              short(st))
        # forced calls on a model whose calls are read as hermes: written in its own format after the
        # thoughts, read back as tool_calls (the openai client's objects), nothing else in the answer
        fn = [{"type": "function", "function": {"name": "w", "parameters": weather}}]
        forced = c.chat.completions.create(model=m, messages=ask, max_tokens=150, temperature=1.0, seed=3, tools=fn,
                                           tool_choice="required", parallel_tool_calls=False,
                                           extra_body={"thinking_token_budget": 2})
        fm = forced.choices[0].message
        args = [json.loads(k.function.arguments) for k in fm.tool_calls or []]
        check(forced.choices[0].finish_reason == "tool_calls" and len(args) == 1 and fm.content is None
              and all(k.function.name == "w" for k in fm.tool_calls) and jsonschema.Draft202012Validator(weather).is_valid(args[0])
              and (fm.model_extra or {}).get("reasoning_content") is not None,
              "tool_choice required on a hermes model: one call in its own format after the thoughts, read back as "
              "tool_calls (content null, finish tool_calls)", short(forced))
        many = c.chat.completions.create(model=m, messages=ask, max_tokens=120, temperature=1.0, seed=4, n=2, tools=fn,
                                         tool_choice={"type": "function", "function": {"name": "w"}},
                                         extra_body={"thinking_token_budget": 2})
        chunks = list(c.chat.completions.create(model=m, messages=ask, max_tokens=120, temperature=1.0, seed=4, n=2, tools=fn,
                                                tool_choice={"type": "function", "function": {"name": "w"}}, stream=True,
                                                extra_body={"thinking_token_budget": 2}))
        streamed = {}
        for k in chunks:
            for ch in k.choices:
                for d in ch.delta.tool_calls or []:
                    streamed.setdefault(ch.index, "")
                    streamed[ch.index] += d.function.arguments or ""
        whole = {ch.index: ch.message.tool_calls[0].function.arguments for ch in many.choices if ch.message.tool_calls}
        check(all(ch.finish_reason == "tool_calls" and len(ch.message.tool_calls or []) == 1 and ch.message.content is None
                  for ch in many.choices) and streamed == whole,
              "a named function on a hermes model: one call each (n=2), streamed the same", short([many, streamed]))
        budget_refused = c.with_options(max_retries=0)
        try:
            budget_refused.completions.create(model=m, prompt="a", max_tokens=2, extra_body={"thinking_token_budget": 4})
            check(False, "thinking_token_budget on completions: refused", "accepted")
        except openai.BadRequestError as e:
            check("thinking_token_budget" in str(e), "thinking_token_budget on completions: a 400 naming it", str(e))
        # the Responses API: the thoughts as a reasoning item's text, whole and streamed
        rr = c.responses.create(model=m, input=ask, max_output_tokens=12, temperature=0, extra_body={"ignore_eos": True})
        item = rr.output[0] if len(rr.output) == 1 else None
        check(item is not None and item.type == "reasoning" and item.content[0].text == thoughts and item.status == "incomplete"
              and rr.status == "incomplete" and rr.usage.output_tokens_details.reasoning_tokens == 12
              and rr.output_text == "",
              "responses: thoughts that never end are one reasoning item (incomplete), reasoning_tokens counted",
              short(rr))
        with c.responses.stream(model=m, input=ask, max_output_tokens=12, temperature=0,
                                extra_body={"ignore_eos": True}) as s:
            evs = list(s)
        said = "".join(e.delta for e in evs if e.type == "response.reasoning_text.delta")
        last = evs[-1].response.output if evs else []
        check(said == thoughts and evs[-1].type == "response.incomplete" and len(last) == 1 and last[0].type == "reasoning"
              and last[0].content[0].text == thoughts,
              "responses streamed: reasoning_text deltas spell the thoughts; the last event's item holds them",
              short([e.type for e in evs]))
        # Anthropic's Messages API: the thoughts as a thinking block, whole and streamed
        a = anthropic.Anthropic(base_url=srv.url, api_key="unused", max_retries=0)
        am = a.messages.create(model=m, max_tokens=12, messages=ask, extra_body={"temperature": 0, "ignore_eos": True})
        with a.messages.stream(model=m, max_tokens=12, messages=ask, extra_body={"temperature": 0, "ignore_eos": True}) as s:
            streamed_msg = s.get_final_message()
        check([(b.type, b.thinking) for b in am.content] == [("thinking", thoughts)] and am.stop_reason == "max_tokens"
              and [(b.type, b.thinking) for b in streamed_msg.content] == [("thinking", thoughts)],
              "messages: thoughts that never end are one thinking block, whole and streamed", short([am, streamed_msg]))
        budgeted = a.messages.create(model=m, max_tokens=12, messages=ask, thinking={"type": "enabled", "budget_tokens": 4},
                                     extra_body={"temperature": 0, "ignore_eos": True})
        check([b.type for b in budgeted.content][:1] == ["thinking"] and budgeted.content[0].thinking == t4,
              "messages: thinking.budget_tokens 4 ends the thinking block after 4 tokens", short(budgeted))
        quiet = c.chat.completions.create(model=m, messages=ask, max_tokens=4, temperature=0,
                                          extra_body={"include_reasoning": False})
        check("reasoning_content" not in (quiet.choices[0].message.model_extra or {}),
              "include_reasoning false leaves the thoughts out", short(quiet))
    finally:
        srv.kill()
