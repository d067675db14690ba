"""Helpers shared by the SDK tests."""


def collect(stream):
    """Reads an `openai` chat completion stream to its end: (text, usage or None)."""
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    return text, usage
