"""Keys under which Clutch's addons leave facts for each other in `flow.metadata`."""

IDENTITY = "clutch.identity"  # identity.Identity of the agent that sent the flow
CALL = "clutch.call"  # dialects.LLMCall, set by Classify on recognised LLM requests
WEBSOCKET = "clutch.websocket"  # True on Codex's Responses WebSocket upgrade
ATTEMPTS = "clutch.attempts"  # list[engine.Attempt], one per upstream attempt
