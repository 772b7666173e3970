"""A mock LLM provider that answers like OpenAI's API: chat completions (JSON and SSE
with a final usage chunk) and the model list. The only mock in Creditgate: no machine
here reaches a real provider. Usage is deterministic so tests can price it exactly:
prompt tokens = words in the messages + 3 per message + 3; the reply is
``REPLY_WORDS`` words (fewer when ``max_tokens`` is smaller), one token per word.
"""
