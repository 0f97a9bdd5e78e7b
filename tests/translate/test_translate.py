"""Requests, whole responses and error bodies translated between Anthropic Messages and OpenAI chat.

Fixtures follow the providers' public references (URL above each); translated responses and errors are
read back with the official `anthropic` and `openai` SDKs' own models and error classes.
"""

import json

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from addons.translate.anthropic_to_chat import anthropic_to_chat_request, anthropic_to_chat_response
from addons.translate.chat_to_anthropic import chat_to_anthropic_request, chat_to_anthropic_response
from addons.translate.vocabulary import Flavour

# https://docs.anthropic.com/en/docs/build-with-claude/tool-use (tool definition of the examples)
GET_WEATHER = {"name": "get_weather", "description": "Get the current weather in a given location",
               "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                "required": ["location"]}}
# https://docs.anthropic.com/en/docs/build-with-claude/vision (base64 and URL image sources)
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
IMAGE_URL = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"


def to_chat(body, flavour=Flavour.OPENROUTER, model="target/model"):
    notes: list[str] = []
    return anthropic_to_chat_request(body, model, flavour, notes), notes


def to_anthropic(body, model="claude-target"):
    notes: list[str] = []
    return chat_to_anthropic_request(body, model, notes), notes


# =============================================================================== Anthropic -> chat

def test_system_blocks_and_cache_control_only_for_openrouter():
    body = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "system": [{"type": "text", "text": "You are Claude Code."},
                       {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]}
    chat, notes = to_chat(body, Flavour.OPENROUTER)
    assert chat["messages"][0] == {"role": "system", "content": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]}
    assert chat["model"] == "target/model" and chat["max_tokens"] == 100 and notes == []
    chat, notes = to_chat(body, Flavour.OPENAI)
    assert chat["messages"][0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief."}
    assert chat["max_completion_tokens"] == 100 and "max_tokens" not in chat
    assert notes == ["stripped cache_control (openai takes none)"]
    chat, _ = to_chat({**body, "system": "plain"}, Flavour.GENERIC)
    assert chat["messages"][0] == {"role": "system", "content": "plain"} and chat["max_tokens"] == 100


def test_multipart_user_content_with_both_image_encodings_and_a_dropped_document():
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "text", "text": "Compare these images."}]}]}
    chat, notes = to_chat(body)
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        {"type": "text", "text": "Compare these images."}]}]
    assert notes == ["dropped document block (no chat counterpart)"]


def test_tools_server_tools_tool_choice_and_parallel_flag():
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [GET_WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
                      {"type": "bash_20250124", "name": "bash"}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}}
    chat, notes = to_chat(body)
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": GET_WEATHER["input_schema"], "description": GET_WEATHER["description"]}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert notes == ["dropped server tool web_search_20250305", "dropped server tool bash_20250124"]
    for anthropic_choice, chat_choice in [({"type": "auto"}, "auto"), ({"type": "any"}, "required"),
                                          ({"type": "none"}, "none")]:
        assert to_chat({**body, "tool_choice": anthropic_choice})[0]["tool_choice"] == chat_choice
    only_server, notes = to_chat({**body, "tools": body["tools"][1:2], "tool_choice": {"type": "any"}})
    assert "tools" not in only_server and "tool_choice" not in only_server
    assert notes[-1] == "dropped tool_choice (no tools left)"


def test_tool_results_come_first_with_is_error_and_images_after():
    body = {"max_tokens": 10, "messages": [
        {"role": "user", "content": "Screenshot the page and list files"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two tools.", "signature": "EqQBCgIYAhIM..."},
            {"type": "text", "text": "Running both."},
            {"type": "tool_use", "id": "toolu_01A", "name": "screenshot", "input": {}},
            {"type": "tool_use", "id": "toolu_01B", "name": "ls", "input": {"path": "/nope"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [
                {"type": "text", "text": "captured"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}]},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": True,
             "content": "ls: /nope: No such file or directory"},
            {"type": "text", "text": "Also summarise.", "cache_control": {"type": "ephemeral"}}]}]}
    chat, notes = to_chat(body)
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Running both.", "tool_calls": [
            {"id": "toolu_01A", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}},
            {"id": "toolu_01B", "type": "function", "function": {"name": "ls", "arguments": '{"path":"/nope"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "captured"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: ls: /nope: No such file or directory"},
        {"role": "user", "content": [
            {"type": "text", "text": "(images returned by tool call toolu_01A)"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
            {"type": "text", "text": "Also summarise.", "cache_control": {"type": "ephemeral"}}]}]
    assert notes == ["dropped thinking blocks from the history (chat providers cannot verify them)",
                     "moved tool_result images into a user message (chat tool messages are text only)"]


def test_cache_control_on_assistant_text_keeps_parts_for_openrouter_only():
    body = {"max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}]}]}
    assert to_chat(body, Flavour.OPENROUTER)[0]["messages"][1]["content"] == [
        {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}]
    assert to_chat(body, Flavour.OPENAI)[0]["messages"][1]["content"] == "Hello"


def test_cache_control_on_a_tool_result_is_kept_for_openrouter():
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done", "cache_control": {"type": "ephemeral"}}]}]}
    chat, _ = to_chat(body, Flavour.OPENROUTER)
    assert chat["messages"][0]["content"] == [{"type": "text", "text": "done", "cache_control": {"type": "ephemeral"}}]
    assert to_chat(body, Flavour.GENERIC)[0]["messages"][0]["content"] == "done"


@pytest.mark.parametrize("flavour,thinking,effort,expected,note", [
    (Flavour.OPENROUTER, {"type": "enabled", "budget_tokens": 8000}, None, {"reasoning": {"max_tokens": 8000}},
     "thinking -> reasoning.max_tokens=8000"),
    (Flavour.OPENROUTER, {"type": "adaptive"}, "high", {"reasoning": {"effort": "high"}},
     "thinking -> reasoning.effort=high"),
    (Flavour.OPENROUTER, {"type": "adaptive"}, None, {"reasoning": {"effort": "medium"}},
     "thinking -> reasoning.effort=medium"),
    (Flavour.OPENAI, {"type": "enabled", "budget_tokens": 2048}, None, {"reasoning_effort": "low"},
     "thinking -> reasoning_effort=low"),
    (Flavour.OPENAI, {"type": "enabled", "budget_tokens": 10000}, None, {"reasoning_effort": "medium"},
     "thinking -> reasoning_effort=medium"),
    (Flavour.GENERIC, {"type": "enabled", "budget_tokens": 16384}, None, {"reasoning_effort": "high"},
     "thinking -> reasoning_effort=high"),
    (Flavour.OPENAI, {"type": "adaptive"}, None, {"reasoning_effort": "medium"}, "thinking -> reasoning_effort=medium"),
    (Flavour.OPENAI, None, "low", {"reasoning_effort": "low"}, "thinking -> reasoning_effort=low"),
    (Flavour.ANTHROPIC, {"type": "enabled", "budget_tokens": 4000}, None,
     {"thinking": {"type": "enabled", "budget_tokens": 4000}}, None),
])
def test_thinking_and_effort(flavour, thinking, effort, expected, note):
    body = {"max_tokens": 20000, "messages": [{"role": "user", "content": "think"}]}
    if thinking:
        body["thinking"] = thinking
    if effort:
        body["output_config"] = {"effort": effort}
    chat, notes = to_chat(body, flavour)
    assert {k: chat[k] for k in expected} == expected
    assert notes == ([note] if note else [])
    for other in {"reasoning", "reasoning_effort", "thinking"} - set(expected):
        assert other not in chat


def test_sampling_stop_stream_user_and_dropped_fields():
    body = {"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END", "STOP"],
            "metadata": {"user_id": "user_abc"}, "context_management": {"edits": []}, "service_tier": "auto",
            "container": "c1", "mcp_servers": []}
    chat, notes = to_chat(body, Flavour.OPENROUTER)
    assert {k: chat[k] for k in ("temperature", "top_p", "top_k", "stop", "stream", "stream_options", "user")} == {
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": ["END", "STOP"], "stream": True,
        "stream_options": {"include_usage": True}, "user": "user_abc"}
    assert notes == ["dropped context_management", "dropped service_tier", "dropped container", "dropped mcp_servers"]
    assert to_chat({**body, "stop_sequences": "END"})[0]["stop"] == ["END"]
    chat, notes = to_chat({**body, "stop_sequences": list("abcde")}, Flavour.OPENAI)
    assert "top_k" not in chat and chat["stop"] == list("abcd")
    assert notes[:2] == ["dropped top_k (openai takes none)", "kept the first 4 of 5 stop sequences (OpenAI's limit)"]


def test_assistant_history_with_only_a_tool_call_has_null_content():
    body = {"max_tokens": 10, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "run", "input": {"a": [1]}}]}]}
    chat, _ = to_chat(body)
    assert chat["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_9", "type": "function", "function": {"name": "run", "arguments": '{"a":[1]}'}}]}


# =============================================================================== chat -> Anthropic

def test_system_and_developer_messages_become_the_system_prompt():
    body = {"model": "gpt-x", "max_tokens": 100, "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"},
        {"role": "system", "content": "Late rule."}]}
    out, notes = to_anthropic(body)
    assert out["system"] == [{"type": "text", "text": "You are helpful.\n\nAnswer in French.\n\nLate rule."}]
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert out["model"] == "claude-target" and out["max_tokens"] == 100
    assert notes == ["moved a later system message into the system prompt"]
    cached, _ = to_anthropic({**body, "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Big prompt", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Hello"}]})
    assert cached["system"] == [{"type": "text", "text": "Big prompt", "cache_control": {"type": "ephemeral"}}]


def test_images_both_encodings_and_unsupported_parts():
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
        {"type": "text", "text": ""}]}]}
    out, notes = to_anthropic(body)
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}}]
    assert notes == ["dropped input_audio content part"]


def test_tool_calls_and_consecutive_tool_messages_merge_into_one_user_turn():
    # https://platform.openai.com/docs/guides/function-calling (parallel calls answered by tool messages)
    body = {"max_tokens": 10, "messages": [
        {"role": "user", "content": "Weather in Paris and Bogotá?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_12345xyz", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'}},
            {"id": "call_67890abc", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"Bogotá, Colombia"'}}]},
        {"role": "tool", "tool_call_id": "call_12345xyz", "content": "26°C"},
        {"role": "tool", "tool_call_id": "call_67890abc", "content": [{"type": "text", "text": "14°C"}]},
        {"role": "user", "content": "Thanks"},
        {"role": "user", "content": "Which is warmer?"}]}
    out, notes = to_anthropic(body)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_12345xyz", "name": "get_weather", "input": {"location": "Paris, France"}},
        {"type": "tool_use", "id": "call_67890abc", "name": "get_weather",
         "input": {"_raw": '{"location":"Bogotá, Colombia"'}}]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_12345xyz", "content": "26°C"},
        {"type": "tool_result", "tool_use_id": "call_67890abc", "content": [{"type": "text", "text": "14°C"}]},
        {"type": "text", "text": "Thanks"}, {"type": "text", "text": "Which is warmer?"}]
    assert notes == ["tool call get_weather: arguments are not a JSON object, kept as _raw"]


def test_unsafe_tool_ids_are_made_anthropic_safe_on_both_sides():
    body = {"max_tokens": 10, "messages": [
        {"role": "user", "content": "ls"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.Bash:0", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.Bash:0", "content": ""}]}
    out, _ = to_anthropic(body)
    assert out["messages"][1]["content"][0]["id"] == "functions_Bash_0"
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "functions_Bash_0"}]


def test_tools_tool_choice_and_parallel_calls():
    tools = [{"type": "function", "function": {"name": "get_weather", "description": GET_WEATHER["description"],
                                               "parameters": GET_WEATHER["input_schema"]}},
             {"type": "custom", "custom": {"name": "grammar_tool"}}]
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "tools": tools,
            "tool_choice": "required", "parallel_tool_calls": False}
    out, notes = to_anthropic(body)
    assert out["tools"] == [GET_WEATHER]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert notes == ["dropped custom tool (only function tools translate)"]
    for chat_choice, expected in [("auto", {"type": "auto"}), ("none", {"type": "none"}),
                                  ({"type": "function", "function": {"name": "get_weather"}},
                                   {"type": "tool", "name": "get_weather"})]:
        out, _ = to_anthropic({**body, "tool_choice": chat_choice, "parallel_tool_calls": True})
        assert out["tool_choice"] == expected


@pytest.mark.parametrize("fields,budget,max_tokens", [
    ({"reasoning_effort": "low"}, 2048, 30000),
    ({"reasoning_effort": "medium"}, 8192, 30000),
    ({"reasoning_effort": "high"}, 24576, 30000),
    ({"reasoning": {"effort": "high"}}, 24576, 30000),
    ({"reasoning": {"max_tokens": 500}}, 1024, 30000),  # Anthropic's minimum budget
    ({"reasoning": {"enabled": True}}, 8192, 30000),
    ({"reasoning_effort": "high", "max_tokens": 4000}, 24576, 28576),  # room for the answer kept on top
])
def test_reasoning_becomes_a_thinking_budget(fields, budget, max_tokens):
    body = {"max_completion_tokens": 30000, "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required", **fields}
    if "max_tokens" in fields:
        del body["max_completion_tokens"]
    out, notes = to_anthropic(body)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == max_tokens and out["max_tokens"] > budget
    assert "temperature" not in out and "dropped temperature (Anthropic requires 1 with thinking)" in notes
    assert out["tool_choice"] == {"type": "auto"}  # thinking allows only auto or none


def test_max_tokens_default_stop_sampling_and_dropped_fields():
    body = {"messages": [{"role": "user", "content": "hi"}], "stop": "###", "temperature": 1.5, "top_p": 0.5,
            "top_k": 20, "user": "u-1", "stream": True, "stream_options": {"include_usage": True}, "seed": 7,
            "logprobs": True, "n": 2, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}
    out, notes = to_anthropic(body)
    assert out["max_tokens"] == 8192 and out["stop_sequences"] == ["###"]
    assert out["temperature"] == 1 and "top_p" not in out and out["top_k"] == 20
    assert out["metadata"] == {"user_id": "u-1"} and out["stream"] is True
    assert notes == ["max_tokens 8192 (Anthropic requires one)", "temperature 1.5 -> 1 (Anthropic's maximum)",
                     "dropped top_p (recent Claude models refuse temperature and top_p together)",
                     "n=2 -> 1 (Anthropic returns one answer)", "dropped response_format json_schema",
                     "dropped seed", "dropped logprobs"]
    out, notes = to_anthropic({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop": ["\n", "Q:"]})
    assert out["stop_sequences"] == ["Q:"]
    assert notes == ["dropped whitespace-only stop sequences (Anthropic refuses them)"]


def test_notes_say_what_a_translation_added():
    notes: list[str] = []
    chat_to_anthropic_request({"messages": [{"role": "user", "content": "x"}]}, "m", notes)
    assert notes == ["max_tokens 8192 (Anthropic requires one)"]


# =================================================================================== whole responses

# https://openrouter.ai/docs/use-cases/reasoning-tokens (message.reasoning) on the chat.completion object of
# https://platform.openai.com/docs/api-reference/chat/object, usage with cached tokens
# (https://platform.openai.com/docs/guides/prompt-caching)
CHAT_COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
    "model": "deepseek/deepseek-r1", "provider": "DeepInfra",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Let me look.", "refusal": None,
        "reasoning": "The user wants the weather; call the tool.",
        "tool_calls": [{"id": "call_abc", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]}}],
    "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
              "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 120}, "cost": 0.0012}}

# https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking (response with a thinking block)
# and https://docs.anthropic.com/en/docs/build-with-claude/tool-use (tool_use response)
ANTHROPIC_MESSAGE = {
    "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "thinking", "thinking": "Let me analyze this step by step...",
                 "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL"},
                {"type": "text", "text": "I'll check the weather."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                 "input": {"location": "San Francisco, CA"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 50, "output_tokens": 120, "cache_read_input_tokens": 2000,
              "cache_creation_input_tokens": 300}}


def test_chat_completion_becomes_an_anthropic_message():
    out = chat_to_anthropic_response(CHAT_COMPLETION)
    message = Message.model_validate(out)
    assert message.id == "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG" and message.model == "deepseek/deepseek-r1"
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "The user wants the weather; call the tool."
    assert message.content[0].signature == ""
    assert (message.content[2].id, message.content[2].input) == ("call_abc", {"location": "Paris"})
    assert message.stop_reason == "tool_use"
    assert out["usage"] == {"input_tokens": 86, "output_tokens": 300, "cache_read_input_tokens": 1920,
                            "cache_creation_input_tokens": 0}


def test_anthropic_message_becomes_a_chat_completion():
    out = anthropic_to_chat_response(ANTHROPIC_MESSAGE)
    completion = ChatCompletion.model_validate(out)
    assert completion.id == "chatcmpl-01Aq9w938a90dw8q" and completion.model == "claude-sonnet-4-5"
    message = completion.choices[0].message
    assert message.content == "I'll check the weather."
    assert out["choices"][0]["message"]["reasoning"] == "Let me analyze this step by step..."
    assert json.loads(message.tool_calls[0].function.arguments) == {"location": "San Francisco, CA"}
    assert message.tool_calls[0].id == "toolu_01A09q90qw90lq917835lq9"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 2350, "completion_tokens": 120, "total_tokens": 2470,
                            "prompt_tokens_details": {"cached_tokens": 2000}}


def test_tool_only_anthropic_answer_has_null_chat_content():
    out = anthropic_to_chat_response({**ANTHROPIC_MESSAGE, "content": ANTHROPIC_MESSAGE["content"][2:]})
    assert out["choices"][0]["message"]["content"] is None and "reasoning" not in out["choices"][0]["message"]


def test_invalid_tool_arguments_from_a_chat_provider_are_kept_raw():
    broken = json.loads(json.dumps(CHAT_COMPLETION))
    broken["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"location": "Par'
    assert chat_to_anthropic_response(broken)["content"][2]["input"] == {"_raw": '{"location": "Par'}


@pytest.mark.parametrize("finish,stop", [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                                         ("function_call", "tool_use"), ("content_filter", "refusal"),
                                         (None, "end_turn")])
def test_chat_finish_reasons(finish, stop):
    body = {**CHAT_COMPLETION, "choices": [{"index": 0, "finish_reason": finish,
                                            "message": {"role": "assistant", "content": "x"}}]}
    assert chat_to_anthropic_response(body)["stop_reason"] == stop


def test_tool_calls_with_finish_stop_still_read_as_tool_use():
    body = json.loads(json.dumps(CHAT_COMPLETION))
    body["choices"][0]["finish_reason"] = "stop"
    assert chat_to_anthropic_response(body)["stop_reason"] == "tool_use"


@pytest.mark.parametrize("stop,finish", [("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                         ("stop_sequence", "stop"), ("pause_turn", "stop"),
                                         ("refusal", "content_filter")])
def test_anthropic_stop_reasons(stop, finish):
    body = {**ANTHROPIC_MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert anthropic_to_chat_response(body)["choices"][0]["finish_reason"] == finish


def test_error_objects_in_a_200_body_stay_errors():
    # https://openrouter.ai/docs/api-reference/errors-and-debugging (errors can arrive with HTTP 200)
    body = {"error": {"code": 502, "message": "Provider returned error",
                      "metadata": {"raw": "upstream connect error", "provider_name": "Chutes"}}}
    assert chat_to_anthropic_response(body) == {"type": "error", "error": {
        "type": "api_error", "message": "Provider returned error (Chutes: upstream connect error)"}}
    out = anthropic_to_chat_response({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert out["error"]["message"] == "Overloaded" and out["error"]["code"] == "overloaded_error"


def test_claude_code_inline_system_message_and_billing_line():
    """Claude Code 2.1.3xx: a billing line first in `system`, and its environment as a `system`
    message after the prompt (seen in tests/e2e/test_e2e_claude.py's requests)."""
    body = {"model": "claude-opus-5", "max_tokens": 100,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330; cch=ab12;"},
                       {"type": "text", "text": "You are Claude Code."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "say hi"}]},
                         {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /w"}]}]}
    notes: list[str] = []
    out = anthropic_to_chat_request(body, "m", Flavour.GENERIC, notes)
    assert out["messages"] == [{"role": "system", "content": "You are Claude Code."},
                               {"role": "user", "content": "say hi"},
                               {"role": "system", "content": "# Environment\ncwd: /w"}]
    assert "dropped Claude Code's x-anthropic-billing-header system line" in notes
