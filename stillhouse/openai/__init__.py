"""The OpenAI wire protocol, the ground floor that the gateway, the engine's `serve-model` and the
providers stand on: request models (`protocol`), a streamed answer reassembled (`stream`), server-
sent events, bodies, errors and the app factory (`http`). Imports nothing of the project but
`errors`; named after the protocol, not the SDK (which `import openai` still is).
"""
