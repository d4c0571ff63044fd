"""OpenAI's Responses API (POST /v1/responses) through the official openai client (http_test.py):
each answer held to the chat completion of the same conversation (same text, same usage), the
stream through the client's own accumulator (responses.stream, which checks the events' order and
identities), function calls and their outputs sent back, text.format, and what is refused."""
import json

import jsonschema
import openai

from harness import CONTEXT, check, client, main_server, metric, metrics, oai, short, tokenize


def event_order_ok(types):
    """created, in_progress, then items (each added ... done), then one terminal event."""
    if types[:2] != ["response.created", "response.in_progress"] or types[-1] not in ("response.completed",
                                                                                       "response.incomplete"):
        return False
    open_items = 0
    for t in types[2:-1]:
        if t == "response.output_item.added":
            open_items += 1
        elif t == "response.output_item.done":
            open_items -= 1
        elif open_items != 1:
            return False
    return open_items == 0


def case_responses():
    srv = main_server()
    if not srv:
        return
    c = oai(srv)
    m = srv.model
    story = "Tell me about the sea."
    ask = {"model": m, "max_output_tokens": 10, "temperature": 0, "extra_body": {"ignore_eos": True}}

    # plain input: the chat answer to the same message, as one message item; cut by max_output_tokens
    r = c.responses.create(input=story, **ask)
    chat = c.chat.completions.create(model=m, messages=[{"role": "user", "content": story}], max_tokens=10, temperature=0,
                                     extra_body={"ignore_eos": True})
    item = r.output[0] if r.output else None
    check(r.object == "response" and r.id.startswith("resp_") and len(r.output) == 1 and item.type == "message"
          and item.role == "assistant" and item.content[0].type == "output_text"
          and r.output_text == chat.choices[0].message.content,
          "responses.create: one message item whose output_text is chat's answer to the same message", short(r))
    check(r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens" and item.status == "incomplete"
          and r.usage.input_tokens == chat.usage.prompt_tokens and r.usage.output_tokens == 10
          and r.usage.total_tokens == chat.usage.total_tokens and r.usage.output_tokens_details.reasoning_tokens == 0
          and r.max_output_tokens == 10 and r.model == m and r.store is True,
          "cut by max_output_tokens: status incomplete (reason max_output_tokens); usage in input/output tokens, as "
          "chat's", short([r.status, r.usage, chat.usage]))

    # instructions and message items (developer as system, content parts) render as chat's messages
    items = [{"role": "developer", "content": "Answer briefly."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Name a "},
                                                             {"type": "input_text", "text": "colour."}]},
             {"role": "assistant", "content": [{"type": "output_text", "text": "Blue."}]},
             {"role": "user", "content": "Another?"}]
    r2 = c.responses.create(input=items, instructions="You are terse.", **ask)
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"}]
    chat2 = c.chat.completions.create(model=m, messages=msgs, max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    check(r2.output_text == chat2.choices[0].message.content and r2.usage.input_tokens == chat2.usage.prompt_tokens
          and r2.usage.input_tokens == tokenize(srv, None, messages=msgs)["count"] and r2.instructions == "You are terse.",
          "instructions and input items: the chat answer of the same messages (developer as system, parts joined)",
          short([r2, chat2]))

    # streamed: the client's accumulator takes every event; the final response is the whole one's
    # (cut by max_output_tokens the stream ends with response.incomplete, as OpenAI's, which the
    # client's get_final_response does not take: its event carries the response)
    with c.responses.stream(input=story, **ask) as s:
        events = list(s)
    final = events[-1].response
    types = [e.type for e in events]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check(event_order_ok(types) and [e.sequence_number for e in events] == list(range(len(events)))
          and final.output_text == r.output_text == deltas and final.status == "incomplete" and final.id == events[0].response.id
          and final.usage.output_tokens == 10,
          "responses.stream: created, in_progress, the item's events, incomplete; sequence numbers 0.., the text deltas "
          "and the final response equal the whole answer", short(types))

    # truncation auto: a conversation over the context loses its oldest turns; disabled refuses it
    # with code context_length_exceeded (the openai client's BadRequestError)
    long_turns = []
    for t in range(12):
        long_turns += [{"role": "user", "content": f"Turn {t}: " + "tell me about the sea " * 4},
                       {"role": "assistant", "content": "The sea is wide."}]
    long_turns.append({"role": "user", "content": "Last one?"})
    try:
        c.with_options(max_retries=0).responses.create(model=m, input=long_turns, max_output_tokens=8)
        refused_code = None
    except openai.BadRequestError as e:
        refused_code = (e.body or {}).get("code") if isinstance(e.body, dict) else None
    cut = c.responses.create(model=m, input=long_turns, max_output_tokens=8, truncation="auto", temperature=0)
    check(refused_code == "context_length_exceeded" and cut.status in ("completed", "incomplete") and cut.truncation == "auto"
          and cut.usage.input_tokens + 8 <= CONTEXT,
          "truncation auto: a conversation over the context is answered without its oldest turns; disabled: "
          "context_length_exceeded", short([refused_code, cut.usage]))

    # log-probabilities (include message.output_text.logprobs): chat's for the same answer, whole
    # and streamed
    lp_chat = c.chat.completions.create(model=m, messages=[{"role": "user", "content": story}], max_tokens=10, temperature=0,
                                        logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    want = [(t.token, round(t.logprob, 4), [a.token for a in t.top_logprobs]) for t in lp_chat.choices[0].logprobs.content]
    lp = c.responses.create(input=story, include=["message.output_text.logprobs"], top_logprobs=2, **ask)
    got = [(t.token, round(t.logprob, 4), [a.token for a in t.top_logprobs]) for t in lp.output[0].content[0].logprobs]
    with c.responses.stream(input=story, include=["message.output_text.logprobs"], top_logprobs=2, **ask) as s:
        lp_events = list(s)
    streamed_lp = [(t.token, round(t.logprob, 4), [a.token for a in t.top_logprobs])
                   for e in lp_events if e.type == "response.output_text.delta" for t in (e.logprobs or [])]
    check(got == want and streamed_lp == want and len(want) == 10 and lp.top_logprobs == 2,
          "include message.output_text.logprobs, top_logprobs 2: the output_text's logprobs are chat's, whole and in "
          "the streamed deltas", short([got, streamed_lp, want]))

    # the store (on by default, as OpenAI's): retrieve what was answered, whole or streamed; go on
    # from it with previous_response_id (the chat of the whole conversation); delete it
    kept = c.responses.retrieve(r.id)
    check(r.store is True and kept.model_dump() == r.model_dump(), "responses.retrieve: the stored response, as answered",
          short(kept))
    streamed_kept = c.responses.retrieve(final.id)
    check(streamed_kept.model_dump() == final.model_dump(), "a streamed response is stored as its last event had it",
          short(streamed_kept))
    more = c.responses.create(previous_response_id=r.id, input="And the sky?", **ask)
    chat_more = c.chat.completions.create(model=m, messages=[{"role": "user", "content": story},
                                                             {"role": "assistant", "content": r.output_text},
                                                             {"role": "user", "content": "And the sky?"}],
                                          max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    check(more.previous_response_id == r.id and more.output_text == chat_more.choices[0].message.content
          and more.usage.input_tokens == chat_more.usage.prompt_tokens,
          "previous_response_id: the answer to the stored conversation and the new input, as chat's", short([more, chat_more]))
    # input_items: a response's own input (not what previous_response_id brought), newest first by
    # default, paged by limit and after
    own = list(c.responses.input_items.list(more.id))
    four = list(c.responses.input_items.list(r2.id, order="asc"))
    with client() as hc:
        page = hc.get(f"{srv.url}/v1/responses/{r2.id}/input_items", params={"order": "asc", "limit": 2}).json()
        rest = hc.get(f"{srv.url}/v1/responses/{r2.id}/input_items",
                      params={"order": "asc", "after": page["last_id"]}).json()
        bad = hc.get(f"{srv.url}/v1/responses/{r2.id}/input_items", params={"limit": 0})
    texts = [[p.text for p in it.content] for it in four]
    check(len(own) == 1 and own[0].role == "user" and own[0].content[0].text == "And the sky?"
          and texts == [["Answer briefly."], ["Name a ", "colour."], ["Blue."], ["Another?"]]
          and [it.role for it in four] == ["developer", "user", "assistant", "user"] and all(it.id for it in four)
          and [x["id"] for x in page["data"] + rest["data"]] == [it.id for it in four] and page["has_more"] is True
          and rest["has_more"] is False and bad.status_code == 400,
          "responses.input_items.list: the response's own input items with ids (order, limit, after); limit 0 is a 400",
          short([own, four, page, rest, bad.text]))
    stored_before = metric(metrics(srv)[1], "tpserve_responses_stored") or 0
    c.responses.delete(r.id)
    stored_after = metric(metrics(srv)[1], "tpserve_responses_stored") or 0
    check(stored_before >= 3 and stored_after == stored_before - 1
          and (metric(metrics(srv)[1], "tpserve_responses_stored_bytes") or 0) > 0,
          f"/metrics: tpserve_responses_stored ({stored_before:g} -> {stored_after:g} after a delete) and its bytes")
    gone = []
    for call in (lambda: c.responses.retrieve(r.id),
                 lambda: c.responses.create(previous_response_id=r.id, input="x", **ask)):
        try:
            call()
            gone.append(False)
        except openai.NotFoundError as e:
            gone.append("no stored response" in str(e))
    unkept = c.responses.create(input=story, store=False, **ask)
    try:
        c.responses.retrieve(unkept.id)
        gone.append(False)
    except openai.NotFoundError:
        gone.append(unkept.store is False)
    with client() as hc:
        put = hc.put(srv.url + "/v1/responses/" + more.id)
    check(gone == [True, True, True] and put.status_code == 405 and put.headers.get("allow") == "GET, DELETE",
          "deleted: retrieve and previous_response_id are 404; store false keeps nothing; PUT is 405 (Allow: GET, DELETE)",
          short([gone, put.status_code, put.headers.get("allow")]))

    # function tools: forced calls as function_call items, then the outputs sent back as items
    weather = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}, "days": {"type": "integer"}},
               "required": ["city", "days"]}
    tools = [{"type": "function", "name": "get_weather", "description": "Weather by city", "parameters": weather}]
    q = [{"role": "user", "content": "Weather in Oslo?"}]
    called = c.responses.create(model=m, input=q, tools=tools, tool_choice="required", max_output_tokens=150,
                                parallel_tool_calls=False, temperature=1.0, extra_body={"seed": 1})
    calls = [o for o in called.output if o.type == "function_call"]
    ok = bool(calls) and called.status == "completed"
    for call in calls:
        try:
            jsonschema.validate(json.loads(call.arguments), weather)
        except (TypeError, ValueError, jsonschema.ValidationError):
            ok = False
    chat_tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                                    "parameters": weather}}]
    chat_called = c.chat.completions.create(model=m, messages=q, tools=chat_tools, tool_choice="required", max_tokens=150,
                                            parallel_tool_calls=False, temperature=1.0, seed=1)
    same = [(k.function.name, k.function.arguments) for k in chat_called.choices[0].message.tool_calls or []]
    check(ok and len(calls) == 1 and [(k.name, k.arguments) for k in calls] == same
          and all(k.call_id and k.id.startswith("fc_") for k in calls),
          "tool_choice required, parallel_tool_calls false: one function_call item (name, call_id, arguments jsonschema accepts), chat's calls",
          short(called.output))
    with c.responses.stream(model=m, input=q, tools=tools, tool_choice="required", max_output_tokens=150,
                            parallel_tool_calls=False, temperature=1.0, extra_body={"seed": 1}) as s:
        streamed_events = list(s)
        streamed = s.get_final_response()
    types = [e.type for e in streamed_events]
    check([(k.name, k.arguments) for k in streamed.output if k.type == "function_call"] == same
          and "response.function_call_arguments.done" in types and types.count("response.function_call_arguments.delta") > 1,
          "streamed calls: the arguments come in pieces, and the accumulator's function_call items are the same calls",
          short(streamed.output))
    if calls:
        turn = q + [{"type": "function_call", "call_id": k.call_id, "name": k.name, "arguments": k.arguments} for k in calls]
        turn += [{"type": "function_call_output", "call_id": k.call_id, "output": '{"temp": 4}'} for k in calls]
        back = c.responses.create(model=m, input=turn, tools=tools, **{k: v for k, v in ask.items() if k != "model"})
        chat_turn = q + [{"role": "assistant", "content": "", "tool_calls": [
            {"id": k.call_id, "type": "function", "function": {"name": k.name, "arguments": k.arguments}} for k in calls]}]
        chat_turn += [{"role": "tool", "tool_call_id": k.call_id, "name": k.name, "content": '{"temp": 4}'} for k in calls]
        chat_back = c.chat.completions.create(model=m, messages=chat_turn, tools=chat_tools, max_tokens=10, temperature=0,
                                              extra_body={"ignore_eos": True})
        check(back.usage.input_tokens == chat_back.usage.prompt_tokens
              and back.output_text == (chat_back.choices[0].message.content or ""),
              "function_call and function_call_output items: the chat answer of the assistant's calls and the tool "
              "messages", short([back, chat_back]))

    # text.format json_schema: the output is JSON jsonschema accepts
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}}, "required": ["ok", "n"]}
    fmt = c.responses.create(model=m, input="JSON please", max_output_tokens=60, temperature=1.0,
                             text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
    try:
        jsonschema.validate(json.loads(fmt.output_text), schema)
        valid = True
    except (TypeError, ValueError, jsonschema.ValidationError):
        valid = False
    check(valid and fmt.status == "completed" and fmt.text.format.type == "json_schema",
          "text.format json_schema: output_text is JSON jsonschema accepts", short(fmt))

    # what cannot be served is a 400 naming the Responses field
    for what, body, param, words in [
            ("conversation", {"input": "x", "conversation": "conv_1"}, "conversation", "use previous_response_id"),
            ("a hosted tool", {"input": "x", "tools": [{"type": "web_search"}]}, "tools", "function tools only"),
            ("an image", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]},
             "input", "'input[0].content[0]' is of type 'input_image'"),
            ("max_output_tokens 0", {"input": "x", "max_output_tokens": 0}, "max_output_tokens",
             "'max_output_tokens' must be between 1"),
            ("no input", {"instructions": "x"}, "input", "'input' is required"),
            ("reasoning summaries", {"input": "x", "reasoning": {"summary": "auto"}}, "reasoning", "not offered"),
            ("include", {"input": "x", "include": ["file_search_call.results"]}, "include", "not offered"),
            ("an unknown item", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input", "'item_reference'")]:
        try:
            c.responses.create(model=m, **body)
            check(False, f"refused: {what}")
        except openai.BadRequestError as e:
            err = (e.body or {}) if isinstance(e.body, dict) else {}
            check(words in str(e) and err.get("param") == param, f"refused with a 400 naming '{param}': {what}", str(e))
    with client() as hc:
        raw = hc.post(srv.url + "/v1/responses", content=b'{"input": "x", "max_output_tokens": "ten"}')
    check(raw.status_code == 400 and "'max_output_tokens' must be an integer" in raw.text,
          "a wrong type is named by its Responses field", raw.text)
