"""limner: a local-first LLM workbench. The text buffer is the conversation."""

__version__ = "0.1.0"
