"""Anthropic's Messages API (POST /v1/messages) through the official anthropic client (http_test.py):
each answer held to the chat completion of the same conversation (text, usage, calls), the stream
through the client's own accumulator (messages.stream, which checks the events' order), tool_use and
tool_result blocks, stop_sequences, count_tokens, and errors in Anthropic's shape."""
import json

import anthropic
import jsonschema

from harness import check, client, main_server, oai, short


def claude(srv, key="unused"):
    return anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0, timeout=60)


def case_messages():
    srv = main_server()
    if not srv:
        return
    a = claude(srv)
    c = oai(srv)
    m = srv.model
    story = "Tell me about the sea."
    # (this anthropic client has no temperature argument: sampling fields go in extra_body)
    greedy = {"max_tokens": 10, "extra_body": {"temperature": 0, "ignore_eos": True}}

    r = a.messages.create(model=m, messages=[{"role": "user", "content": story}], **greedy)
    chat = c.chat.completions.create(model=m, messages=[{"role": "user", "content": story}], max_tokens=10, temperature=0,
                                     extra_body={"ignore_eos": True})
    text = r.content[0].text if r.content and r.content[0].type == "text" else None
    check(r.type == "message" and r.role == "assistant" and r.id.startswith("msg_") and len(r.content) == 1
          and text == chat.choices[0].message.content and r.stop_reason == "max_tokens" and r.stop_sequence is None,
          "messages.create: one text block, chat's answer to the same message; stop_reason max_tokens", short(r))
    check(r.usage.input_tokens + r.usage.cache_read_input_tokens == chat.usage.prompt_tokens and r.usage.output_tokens == 10,
          "usage: input_tokens (not read from the cache) + cache_read_input_tokens = chat's prompt_tokens; output 10",
          short([r.usage, chat.usage]))

    # system and block contents render as chat's messages
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
            {"role": "user", "content": "Another?"}]
    r2 = a.messages.create(model=m, system=[{"type": "text", "text": "You are terse."}], messages=msgs, **greedy)
    chat2 = c.chat.completions.create(model=m, messages=[{"role": "system", "content": "You are terse."},
                                                         {"role": "user", "content": "Name a colour."},
                                                         {"role": "assistant", "content": "Blue."},
                                                         {"role": "user", "content": "Another?"}],
                                      max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    check(r2.content[0].text == chat2.choices[0].message.content
          and r2.usage.input_tokens + r2.usage.cache_read_input_tokens == chat2.usage.prompt_tokens,
          "system blocks and text blocks: the chat answer of the same messages", short([r2, chat2]))

    # streamed: the client's accumulator takes every event; the final message is the whole one
    with a.messages.stream(model=m, messages=[{"role": "user", "content": story}], **greedy) as s:
        streamed_text = "".join(s.text_stream)
        final = s.get_final_message()
    check(streamed_text == text and final.content[0].text == text and final.stop_reason == "max_tokens"
          and final.usage.output_tokens == 10 and final.usage.input_tokens == r.usage.input_tokens + r.usage.cache_read_input_tokens
          - final.usage.cache_read_input_tokens,
          "messages.stream: text_stream and get_final_message give the whole answer, stop_reason and usage",
          short(final))

    # stop_sequences: the text before it, stop_reason stop_sequence naming it
    if text and len(text) > 6:
        seq = text[3:6]
        cut = a.messages.create(model=m, messages=[{"role": "user", "content": story}], stop_sequences=[seq], **greedy)
        check(cut.stop_reason == "stop_sequence" and cut.stop_sequence == seq and cut.content[0].text == text[:text.index(seq)],
              f"stop_sequences [{seq!r}]: the text before it, stop_reason stop_sequence, stop_sequence named", short(cut))

    # tools: tool_choice any (one call) gives a tool_use block whose input the schema accepts, chat's call
    weather = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]}, "days": {"type": "integer"}},
               "required": ["city", "days"]}
    tools = [{"name": "get_weather", "description": "Weather by city", "input_schema": weather}]
    q = [{"role": "user", "content": "Weather in Oslo?"}]
    ask = {"model": m, "messages": q, "tools": tools, "max_tokens": 150, "extra_body": {"temperature": 1.0, "seed": 1},
           "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}
    used = a.messages.create(**ask)
    uses = [b for b in used.content if b.type == "tool_use"]
    chat_tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city", "parameters": weather}}]
    chat_used = c.chat.completions.create(model=m, messages=q, tools=chat_tools, tool_choice="required", max_tokens=150,
                                          parallel_tool_calls=False, temperature=1.0, seed=1)
    calls = chat_used.choices[0].message.tool_calls or []
    ok = len(uses) == 1 and used.stop_reason == "tool_use" and len(calls) == 1
    try:
        jsonschema.validate(uses[0].input, weather)
    except (IndexError, jsonschema.ValidationError):
        ok = False
    check(ok and uses[0].name == "get_weather" and uses[0].input == json.loads(calls[0].function.arguments),
          "tool_choice any: one tool_use block (input jsonschema accepts), chat's call; stop_reason tool_use",
          short(used))
    with a.messages.stream(**ask) as s:
        json_pieces = sum(1 for e in s if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
        streamed_use = [b for b in s.get_final_message().content if b.type == "tool_use"]
    check([(b.name, b.input) for b in streamed_use] == [(b.name, b.input) for b in uses] and json_pieces > 1,
          "streamed: the input comes in input_json_delta pieces, and the accumulator's tool_use block is the same call",
          short([json_pieces, streamed_use]))
    if uses:
        turn = q + [{"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                                      {"type": "tool_use", "id": uses[0].id, "name": uses[0].name,
                                                       "input": uses[0].input}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                  "content": [{"type": "text", "text": "4C"}]}, {"type": "text", "text": "So?"}]}]
        back = a.messages.create(model=m, messages=turn, tools=tools, **greedy)
        chat_turn = q + [{"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": uses[0].id, "type": "function", "function": {"name": uses[0].name, "arguments": json.dumps(uses[0].input)}}]},
                         {"role": "tool", "tool_call_id": uses[0].id, "name": uses[0].name, "content": "4C"},
                         {"role": "user", "content": "So?"}]
        chat_back = c.chat.completions.create(model=m, messages=chat_turn, tools=chat_tools, max_tokens=10, temperature=0,
                                              extra_body={"ignore_eos": True})
        check(back.usage.input_tokens + back.usage.cache_read_input_tokens == chat_back.usage.prompt_tokens
              and back.content[0].text == chat_back.choices[0].message.content,
              "tool_use and tool_result blocks: the chat of the assistant's call, the tool message, then the user's text",
              short([back, chat_back]))

    # output_config.format: the text is JSON the schema accepts
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}}, "required": ["ok", "n"],
              "additionalProperties": False}
    shaped = a.messages.create(model=m, max_tokens=60, messages=[{"role": "user", "content": "JSON please"}],
                               output_config={"format": {"type": "json_schema", "schema": schema}},
                               extra_body={"temperature": 1.0})
    try:
        jsonschema.validate(json.loads(shaped.content[0].text), schema)
        valid = shaped.stop_reason == "end_turn"
    except (IndexError, ValueError, jsonschema.ValidationError):
        valid = False
    check(valid, "output_config.format json_schema: the text is JSON jsonschema accepts, stop_reason end_turn", short(shaped))

    counted = a.messages.count_tokens(model=m, messages=[{"role": "user", "content": story}])
    check(counted.input_tokens == chat.usage.prompt_tokens, "messages.count_tokens: the prompt's tokens", short(counted))

    # errors in Anthropic's shape, mapped by the client to its exceptions
    for what, body, exc, words in [
            ("an image", {"model": m, "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "http://x"}}]}]}, anthropic.BadRequestError,
             "'image' block"),
            ("a server tool", {"model": m, "max_tokens": 5, "messages": q, "tools": [{"type": "web_search_20250305",
                                                                                    "name": "web_search"}]},
             anthropic.BadRequestError, "client tools only"),
            ("temperature 1.5", {"model": m, "max_tokens": 5, "messages": q, "extra_body": {"temperature": 1.5}},
             anthropic.BadRequestError, "between 0 and 1"),
            ("65 stop sequences", {"model": m, "max_tokens": 5, "messages": q,
                                   "stop_sequences": [f"s{i}" for i in range(65)]},
             anthropic.BadRequestError, "'stop_sequences' holds at most 64"),
            ("another model", {"model": "claude-x", "max_tokens": 5, "messages": q}, anthropic.NotFoundError, "claude-x")]:
        try:
            a.messages.create(**body)
            check(False, f"refused: {what}")
        except exc as e:
            err = e.body if isinstance(e.body, dict) else {}
            check(err.get("type") == "error" and isinstance(err.get("error"), dict) and words in err["error"].get("message", ""),
                  f"refused in Anthropic's shape ({exc.__name__}): {what}", short(err))
    # (what the client will not send: sent raw)
    with client() as hc:
        bare = hc.post(srv.url + "/v1/messages", json={"model": m, "messages": q})
        wrong = hc.get(srv.url + "/v1/messages")
    check(bare.status_code == 400 and bare.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "'max_tokens' is required"}}
          and wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error",
          "no max_tokens: 400, and GET: 405, both in Anthropic's shape", short([bare.text, wrong.text]))
