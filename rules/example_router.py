"""An example custom router for rules/example.yaml: send short questions in Pi sessions to a free model.

Clutch calls route(request, context) for every LLM request, in a worker thread, with a time limit
(clutch_router_timeout_ms, 2 s by default). `request` is the parsed request body in the agent's own
dialect (read it, do not change it); `context` has agent, session, dialect, provider, model,
tokens (when counted) and signals (image, web_search, long_context, think, toolcall, background).
Return "provider:model" to decide, or None to let the rules decide. An exception or a timeout is
logged and the rules decide.
"""


def route(request, context):
    if context.agent == "pi" and "toolcall" not in context.signals and len(request.get("messages", [])) <= 2:
        return "openrouter:qwen/qwen3-next-80b-a3b-instruct:free"
    return None
