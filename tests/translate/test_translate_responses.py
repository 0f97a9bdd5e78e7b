"""Requests and whole answers translated between the Responses API and Chat Completions (and, through
Chat, Anthropic Messages), read back with the official SDKs' own models (`openai.types.responses.Response`,
`ChatCompletion`, `anthropic.types.Message`), which validate every field.

The Codex fixture has the shapes a real Codex 0.169.0 request has (developer messages, the environment
context as a user message, function tools with `strict: false`, the free-form `apply_patch` custom tool
with its lark grammar, a client-executed `tool_search`, the hosted `web_search`, reasoning with
`encrypted_content`, `include`, `prompt_cache_key`, `client_metadata`, `store: false`), as read from a
request the real CLI sent through a gateway to tests/fake_upstream.py; other fixtures follow
https://platform.openai.com/docs/api-reference/responses/create and /chat/create.
"""

import json

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from addons.wire.dialects import Dialect
from addons.translate.vocabulary import Flavour
from addons.translate.errors import ProviderError, responses_error, translate_error
from addons.translate.responses import responses_to_chat_request
from addons.translate.responses_answers import chat_to_responses_response, responses_to_chat_response
from addons.translate.responses_chat import chat_to_responses_request
from addons.translate.responses_tools import Untranslatable
from addons.translate.pairs import translate_request, translate_whole

EXEC = {"type": "function", "name": "exec_command", "strict": False,
        "description": "Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"],
                       "additionalProperties": False}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch",
               "description": "The `apply_patch` tool can be used to edit files. This is a FREEFORM tool.",
               "format": {"type": "grammar", "syntax": "lark",
                          "definition": "start: begin_patch hunk+ end_patch\nbegin_patch: \"*** Begin Patch\" LF\n"}}
TOOL_SEARCH = {"type": "tool_search", "execution": "client", "description": "# Tool discovery",
               "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
WEB_SEARCH = {"type": "web_search", "external_web_access": True, "search_content_types": ["text", "image"]}
META = {"turn_id": "01a23d42-4922-7a52-82bf-a821f2ece835"}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def codex_request(*history):
    return {
        "model": "gpt-5.5", "stream": True, "tool_choice": "auto", "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"}, "store": False, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "01a23d42-4900-7ac3-9c89-d633002cfc86", "text": {"verbosity": "low"},
        "client_metadata": {"thread_id": "01a23d42-4900-7ac3-9c89-d633002cfc86"},
        "tools": [EXEC, APPLY_PATCH, TOOL_SEARCH, WEB_SEARCH],
        "input": [
            {"type": "message", "id": "msg_f079", "role": "developer",
             "content": [{"type": "input_text", "text": "You are Codex, a coding agent based on GPT-5."}]},
            {"type": "message", "role": "user", "internal_chat_message_metadata_passthrough": META,
             "content": [{"type": "input_text",
                          "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "add hello.txt, then ls"}]},
            *history]}


def to_chat(body, flavour=Flavour.OPENROUTER):
    notes: list[str] = []
    chat, context = responses_to_chat_request(body, "target/model", flavour, notes)
    return chat, context, notes


# ============================================================================ Responses -> chat requests

def test_a_codex_request_becomes_a_chat_request():
    chat, context, notes = to_chat(codex_request())
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "user"]
    assert chat["messages"][0]["content"] == "You are Codex, a coding agent based on GPT-5."
    assert chat["messages"][2] == {"role": "user", "content": "add hello.txt, then ls"}
    exec_, patch, search = chat["tools"]
    assert exec_ == {"type": "function", "function": {"name": "exec_command", "parameters": EXEC["parameters"],
                                                      "description": EXEC["description"], "strict": False}}
    # the free-form tool is a function with one string parameter, its grammar in the description
    assert patch["function"]["name"] == "apply_patch"
    assert patch["function"]["parameters"]["properties"] == {"input": {"type": "string"}}
    assert "start: begin_patch hunk+ end_patch" in patch["function"]["description"]
    assert search["function"]["name"] == "tool_search"
    assert {name: ref.kind for name, ref in context.tools.items()} == {
        "exec_command": "function", "apply_patch": "custom", "tool_search": "tool_search"}
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["reasoning"] == {"effort": "medium"} and chat["parallel_tool_calls"] is True
    assert "tool_choice" not in chat and "prompt_cache_key" not in chat and "store" not in chat
    assert notes == ["dropped hosted tool web_search (no chat counterpart)",
                     "reasoning.effort medium -> reasoning.effort", "dropped text.verbosity",
                     "include reasoning.encrypted_content: not available from a chat provider"]
    assert context.echo["tools"] == codex_request()["tools"] and context.echo["store"] is False


def test_call_ids_pair_exactly_and_reasoning_is_dropped_with_notes():
    chat, _, notes = to_chat(codex_request(
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan: patch."}],
         "encrypted_content": "gAAAAABo..."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Adding it."}]},
        {"type": "custom_tool_call", "id": "ctc_1", "status": "completed", "call_id": "call_patch",
         "name": "apply_patch", "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": "call_patch", "output": "Success. Updated: A hello.txt"},
        {"type": "function_call", "id": "fc_2", "name": "exec_command", "arguments": '{"cmd":"ls"}',
         "call_id": "call_ls", "internal_chat_message_metadata_passthrough": META},
        {"type": "local_shell_call", "call_id": "call_old", "status": "completed",
         "action": {"type": "exec", "command": ["bash", "-lc", "pwd"], "working_directory": "/w"}},
        {"type": "function_call_output", "call_id": "call_ls", "output": "hello.txt\n"},
        {"type": "function_call_output", "call_id": "call_old", "output": "/w\n"}))
    assistant, patched, listed, listing, shell_out = chat["messages"][3:]
    assert assistant["content"] == "Adding it."
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [("call_patch", "apply_patch")]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    assert patched == {"role": "tool", "tool_call_id": "call_patch", "content": "Success. Updated: A hello.txt"}
    # the next calls make an assistant message of their own, right after the output before them
    assert [(c["id"], c["function"]["name"]) for c in listed["tool_calls"]] == [
        ("call_ls", "exec_command"), ("call_old", "local_shell")]
    assert json.loads(listed["tool_calls"][1]["function"]["arguments"]) == {"command": ["bash", "-lc", "pwd"],
                                                                            "workdir": "/w"}
    assert listing == {"role": "tool", "tool_call_id": "call_ls", "content": "hello.txt\n"}
    assert shell_out == {"role": "tool", "tool_call_id": "call_old", "content": "/w\n"}
    assert "dropped reasoning from the history (chat providers take none back)" in notes
    assert "dropped encrypted reasoning (only the agent's provider can read it)" in notes


def test_images_of_a_tool_output_follow_the_tool_messages_in_a_user_message():
    chat, _, notes = to_chat({"model": "x", "tools": [EXEC], "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": PNG, "detail": "low"}]},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_text", "text": "screenshot:"}, {"type": "input_image", "image_url": PNG}]},
        {"type": "function_call_output", "call_id": "orphan", "output": "late"}]})
    user, call, tool, images, orphan = chat["messages"]
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "screenshot:"}
    assert images["role"] == "user" and images["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
    assert orphan == {"role": "user", "content": "Output of tool call orphan:\nlate"}
    assert "sent a tool output without its call as a user message" in notes


@pytest.mark.parametrize("change, reason", [
    ({"previous_response_id": "resp_abc"}, "previous_response_id names a response stored"),
    ({"conversation": "conv_1"}, "conversation names a conversation stored"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt names a prompt template stored"),
    ({"background": True}, "background mode"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
    ({"tool_choice": {"type": "web_search_preview"}}, "forces the hosted tool web_search_preview"),
    ({"tools": [WEB_SEARCH], "tool_choice": "required"}, "no tool of the request has a chat form"),
    ({"tool_choice": {"type": "function", "name": "nope"}}, "'nope', which is not among the tools"),
    ({"input": 42}, "input is neither"),
])
def test_what_a_chat_provider_cannot_do_is_refused(change, reason):
    body = {"model": "x", "input": "hi", "tools": [EXEC], **change}
    with pytest.raises(Untranslatable, match=reason):
        to_chat(body)


def test_tool_choice_in_chat_form():
    body = {"model": "x", "input": "hi", "tools": [EXEC, APPLY_PATCH, GET_TIME]}
    assert to_chat({**body, "tool_choice": {"type": "custom", "name": "apply_patch"}})[0]["tool_choice"] == {
        "type": "function", "function": {"name": "apply_patch"}}
    assert to_chat({**body, "tool_choice": "none"})[0]["tool_choice"] == "none"
    chat, _, notes = to_chat({**body, "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [
        {"type": "function", "name": "get_time"}, {"type": "custom", "name": "apply_patch"}]}})
    assert [t["function"]["name"] for t in chat["tools"]] == ["apply_patch", "get_time"]
    assert chat["tool_choice"] == "required" and notes == ["allowed_tools: sent the 2 allowed tools only"]


GET_TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


@pytest.mark.parametrize("flavour, expected", [
    (Flavour.OPENROUTER, {"reasoning": {"effort": "high"}, "max_tokens": 900}),
    (Flavour.OPENAI, {"reasoning_effort": "high", "max_completion_tokens": 900, "prompt_cache_key": "k",
                      "verbosity": "high"}),
    (Flavour.GENERIC, {"reasoning_effort": "high", "max_tokens": 900}),
    (Flavour.ANTHROPIC, {"thinking": {"type": "enabled", "budget_tokens": 24576}, "max_tokens": 900}),
])
def test_reasoning_limits_and_format_per_provider_family(flavour, expected):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    body = {"model": "x", "input": "hi", "reasoning": {"effort": "high", "summary": "auto"}, "max_output_tokens": 900,
            "prompt_cache_key": "k", "temperature": 0.2,
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True},
                     "verbosity": "high"}}
    chat, _, _ = to_chat(body, flavour)
    assert {k: v for k, v in chat.items() if k in expected} == expected
    assert chat["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    assert chat["temperature"] == 0.2
    chat, _, _ = to_chat({**body, "reasoning": {"effort": "none"}}, Flavour.GENERIC)
    assert "reasoning_effort" not in chat  # other servers know no "none": reasoning stays off


def test_namespaced_and_deferred_tools():
    namespace = {"type": "namespace", "name": "mcp__docs__", "description": "Docs server",
                 "tools": [{"type": "function", "name": "search", "parameters": {"type": "object"}}]}
    deferred = {**GET_TIME, "defer_loading": True}
    chat, context, _ = to_chat({"model": "x", "tools": [namespace, deferred, TOOL_SEARCH], "input": [
        {"role": "user", "content": "find docs"},
        {"type": "tool_search_call", "call_id": "call_ts", "execution": "client", "arguments": {"query": "time"}},
        {"type": "tool_search_output", "call_id": "call_ts", "execution": "client", "status": "completed",
         "tools": [GET_TIME]}]})
    # deferred until tool_search loads it; the loaded tool is then offered, and the search answered
    assert [t["function"]["name"] for t in chat["tools"]] == ["mcp__docs__search", "tool_search", "get_time"]
    assert context.ref("mcp__docs__search").namespace == "mcp__docs__"
    assert chat["messages"][-1] == {"role": "tool", "tool_call_id": "call_ts",
                                    "content": "Tools loaded for the next calls: get_time"}


# ============================================================================ chat answers -> Responses

def completion(message, finish="stop", usage=None):
    return {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1741569952,
            "model": "gpt-4.1-2025-04-14", "choices": [{"index": 0, "message": message, "logprobs": None,
                                                        "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                               "prompt_tokens_details": {"cached_tokens": 8},
                               "completion_tokens_details": {"reasoning_tokens": 4}}}


def test_a_chat_completion_becomes_a_response_the_sdk_validates():
    _, context, _ = to_chat(codex_request())
    answer = completion({"role": "assistant", "content": "Adding it.", "reasoning": "Patch, then list.",
                         "tool_calls": [
                             {"id": "call_patch", "type": "function",
                              "function": {"name": "apply_patch", "arguments": json.dumps({"input": PATCH})}},
                             {"id": "call_ls", "type": "function",
                              "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}}]}, "tool_calls")
    response = Response.model_validate(chat_to_responses_response(answer, context))
    assert response.id == "resp_B9MBs8CjcvOU2jLn4n570S5qMJKcT" and response.status == "completed"
    reasoning, message, patch, listing = response.output
    assert reasoning.summary[0].text == "Patch, then list." and reasoning.encrypted_content is None
    assert message.content[0].text == "Adding it."
    assert (patch.type, patch.call_id, patch.input) == ("custom_tool_call", "call_patch", PATCH)
    assert (listing.type, listing.call_id, listing.arguments) == ("function_call", "call_ls", '{"cmd":"ls"}')
    assert len({item.id for item in response.output}) == 4
    usage = response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens,
            usage.output_tokens_details.reasoning_tokens, usage.total_tokens) == (19, 8, 10, 4, 29)


def test_a_length_stop_and_the_calls_of_local_shell_and_tool_search():
    _, context, _ = to_chat({"model": "x", "input": "hi", "tools": [{"type": "local_shell"}, TOOL_SEARCH]})
    response = Response.model_validate(chat_to_responses_response(completion({"role": "assistant", "content": "Hal"},
                                                                              "length"), context))
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    answer = completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_sh", "type": "function", "function": {"name": "local_shell", "arguments": '{"command":["ls"]}'}},
        {"id": "call_ts", "type": "function", "function": {"name": "tool_search", "arguments": '{"query":"x"}'}}]},
        "tool_calls")
    shell, search = chat_to_responses_response(answer, context)["output"]
    assert shell["type"] == "local_shell_call" and shell["action"] == {"type": "exec", "command": ["ls"]}
    assert search["type"] == "tool_search_call" and search["arguments"] == {"query": "x"}


# ============================================================================ chat client -> Responses

def test_a_chat_request_becomes_a_responses_request():
    notes: list[str] = []
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 8,
            "stop": ["\n\n"], "reasoning_effort": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "time?"},
                                                      {"type": "image_url", "image_url": {"url": PNG}}]},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "call_1", "type": "function",
                              "function": {"name": "get_time", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]}
    sent = chat_to_responses_request(body, "gpt-5", notes)
    assert sent["instructions"] == "Be brief." and sent["store"] is False and sent["stream"] is True
    assert sent["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "time?"},
                                     {"type": "input_image", "image_url": PNG}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "12:00"}]
    assert sent["tools"] == [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "function", "name": "get_time"}
    assert sent["max_output_tokens"] == 16 and sent["reasoning"] == {"effort": "low"}
    assert sent["text"] == {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}
    assert notes == ["max tokens 8 -> 16 (the Responses API's minimum)", "dropped stop"]


def test_a_response_becomes_a_chat_completion_the_sdk_validates():
    response = {"id": "resp_abc", "object": "response", "created_at": 1741290958, "status": "completed",
                "model": "gpt-5", "output": [
                    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Think."}]},
                    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                     "content": [{"type": "output_text", "text": "Calling.", "annotations": []}]},
                    {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "get_time",
                     "arguments": "{}", "status": "completed"}],
                "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 5,
                          "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 35}}
    chat = ChatCompletion.model_validate(responses_to_chat_response(response))
    assert chat.id == "chatcmpl-abc" and chat.choices[0].finish_reason == "tool_calls"
    message = chat.choices[0].message
    assert message.content == "Calling." and message.reasoning == "Think."
    assert (message.tool_calls[0].id, message.tool_calls[0].function.name) == ("call_9", "get_time")
    assert (chat.usage.prompt_tokens, chat.usage.prompt_tokens_details.cached_tokens) == (30, 10)
    incomplete = {**response, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                  "output": response["output"][:2]}
    assert responses_to_chat_response(incomplete)["choices"][0]["finish_reason"] == "length"


# ====================================================================== Responses <-> Anthropic, via chat

def test_a_responses_request_reaches_an_anthropic_provider_through_chat():
    notes: list[str] = []
    sent, context = translate_request(codex_request(
        {"type": "custom_tool_call", "call_id": "call:patch/1", "name": "apply_patch", "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": "call:patch/1", "output": "Success."}),
        Dialect.OPENAI_RESPONSES, Dialect.ANTHROPIC, "claude-x", Flavour.ANTHROPIC, notes)
    assert sent["system"] == [{"type": "text", "text": "You are Codex, a coding agent based on GPT-5."}]
    assert [t["name"] for t in sent["tools"]] == ["exec_command", "apply_patch", "tool_search"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    call, result = sent["messages"][-2]["content"][0], sent["messages"][-1]["content"][0]
    # Anthropic-safe ids, the same function for the call and its result: still paired
    assert (call["type"], call["id"], call["input"]) == ("tool_use", "call_patch_1", {"input": PATCH})
    assert (result["type"], result["tool_use_id"], result["content"]) == ("tool_result", "call_patch_1", "Success.")
    assert context.ref("apply_patch").kind == "custom"
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "tool_use",
              "content": [{"type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": {"input": PATCH}}],
              "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 5}}
    response = Response.model_validate(translate_whole(Dialect.OPENAI_RESPONSES, Dialect.ANTHROPIC, answer, context))
    [item] = response.output
    assert (item.type, item.call_id, item.input) == ("custom_tool_call", "toolu_1", PATCH)
    assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens) == (15, 5)


def test_an_anthropic_request_reaches_a_responses_provider_through_chat():
    notes: list[str] = []
    body = {"model": "claude-opus-4-8", "max_tokens": 512, "system": "Be brief.",
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [{"name": "get_time", "input_schema": {"type": "object", "properties": {}}}],
            "messages": [{"role": "user", "content": "time?"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time",
                                                            "input": {}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                       "content": "12:00"}]}]}
    sent, context = translate_request(body, Dialect.ANTHROPIC, Dialect.OPENAI_RESPONSES, "gpt-5", Flavour.OPENAI,
                                      notes)
    assert context is None and sent["instructions"] == "Be brief." and sent["reasoning"] == {"effort": "low"}
    assert sent["input"][1:] == [
        {"type": "function_call", "call_id": "toolu_1", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "12:00"}]
    answer = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-5",
              "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": "Noon.", "annotations": []}]}],
              "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 2,
                        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 22}}
    message = Message.model_validate(translate_whole(Dialect.ANTHROPIC, Dialect.OPENAI_RESPONSES, answer, None))
    assert message.content[0].text == "Noon." and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (16, 4)


# ================================================================================================ errors

def test_errors_in_the_responses_dialect():
    body = json.loads(translate_error(b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}', 529,
                                      Dialect.OPENAI_RESPONSES))
    assert body["error"]["message"] == "busy" and body["error"]["code"] == "overloaded_error"
    assert responses_error(ProviderError("prompt is too long: 210000 tokens"), 400)["code"] == "context_length_exceeded"
    assert responses_error(ProviderError("slow down", "rate_limit_error"), 500)["code"] == "rate_limit_exceeded"
    assert responses_error(ProviderError("no credit"), 402)["code"] == "insufficient_quota"
    assert responses_error(ProviderError("boom"), 500) == {"code": "server_error", "message": "boom"}


# ============================================================================= hostile shapes

JUNK = [None, 7, True, "x", [], {}, [7, "x", None], {"type": 7, "content": 7, "tools": 7}]


def mutations(value, path=()):
    """Every variant of `value` with one sub-value (or list element) replaced by junk of another shape
    (the body itself is a JSON object: dialects.read_call reads nothing else)."""
    if path:
        for junk in JUNK:
            yield path, junk
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from mutations(inner, (*path, key))
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            yield from mutations(inner, (*path, n))


def replaced(value, path, junk):
    if not path:
        return junk
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], junk)
    return copy


HISTORY = [{"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}", "namespace": "n"},
           {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_image", "image_url": PNG}]},
           {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": PATCH},
           {"type": "local_shell_call", "call_id": "c3", "action": {"type": "exec", "command": ["ls"]}},
           {"type": "tool_search_output", "call_id": "c4", "tools": [GET_TIME]},
           {"type": "reasoning", "summary": [], "encrypted_content": "x"}]


def test_hostile_shapes_never_crash_a_translator():
    """Every field of real-shaped requests and answers, replaced by junk of another type, gives a translation
    or Untranslatable (which the plan turns into a 400), never an exception: these bytes come from agents
    and providers, and a crash would leave the request to mitmproxy's own path."""
    request = {**codex_request(*HISTORY), "tool_choice": {"type": "allowed_tools", "mode": "auto",
                                                          "tools": [{"type": "function", "name": "exec_command"}]},
               "text": {"format": {"type": "json_schema", "name": "a", "schema": {}}}, "max_output_tokens": 100}
    _, context, _ = to_chat(request)
    answer = completion({"role": "assistant", "content": "x", "reasoning": "r", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"p"}'}}]})
    chat_request = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [
        {"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": PNG}}]}, {"role": "assistant",
        "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "n", "input": "i"}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "reasoning": {"max_tokens": 5000},
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"tools": [{"type": "function"}]}}}
    response = {"id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "t"}]},
                           {"type": "reasoning", "summary": [{"text": "r"}]},
                           {"type": "custom_tool_call", "call_id": "c", "name": "n", "input": "i"}],
                "usage": {"input_tokens": 1, "input_tokens_details": {"cached_tokens": 1}}}
    checked = 0
    for path, junk in mutations(request):
        try:
            to_chat(replaced(request, path, junk))
        except Untranslatable:
            pass
        checked += 1
    for path, junk in mutations(answer):
        chat_to_responses_response(replaced(answer, path, junk), context)
        checked += 1
    for path, junk in mutations(chat_request):
        chat_to_responses_request(replaced(chat_request, path, junk), "m", [])
        checked += 1
    for path, junk in mutations(response):
        responses_to_chat_response(replaced(response, path, junk))
        checked += 1
    assert checked > 1500


def test_an_output_after_a_later_message_moves_next_to_its_call():
    chat, _, notes = to_chat({"model": "x", "tools": [EXEC], "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "call_a", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_b", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "a"},
        {"role": "user", "content": "(interrupted)"},
        {"type": "function_call_output", "call_id": "call_b", "output": "b"},
        {"role": "assistant", "content": [{"type": "reasoning_text", "text": "?"}]}]})
    assert [(m["role"], m.get("tool_call_id")) for m in chat["messages"]] == [
        ("user", None), ("assistant", None), ("tool", "call_a"), ("tool", "call_b"), ("user", None)]
    assert notes == ["moved a tool output next to its call", "dropped empty assistant messages"]
