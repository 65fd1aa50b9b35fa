"""Fake upstream servers speaking the real OpenAI and Anthropic wire formats."""
