"""service.usage.estimate: the usage charged when an upstream reports none."""

from __future__ import annotations

from service.domain import (
    Finish,
    FinishReason,
    ImagePart,
    Message,
    Role,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from service.usage.estimate import (
    IMAGE_TOKENS,
    AnswerCounter,
    answer_tokens,
    cut_short,
    prompt_tokens,
    text_tokens,
)


def test_text_is_one_token_per_three_utf8_bytes_rounded_up() -> None:
    assert text_tokens("") == 0
    assert text_tokens("a") == 1
    assert text_tokens("abcdef") == 2
    assert text_tokens("abcdefg") == 3
    # A CJK character is three UTF-8 bytes: about one token each, as real tokenizers give.
    assert text_tokens("你好世界") == 4


def test_prompt_counts_system_messages_images_tool_calls_and_tools() -> None:
    messages = (
        Message(Role.USER, (TextPart("abcdef"), ImagePart(url="https://x/y.png"))),
        Message(Role.ASSISTANT, tool_calls=(ToolCall("c1", "get", '{"a":1}'),)),
        Message(Role.TOOL, (TextPart("ok"),), tool_call_id="c1"),
    )
    tools = (Tool("get", "Get it.", {"type": "object"}),)
    expected = (
        (4 + text_tokens("sys"))
        + (4 + 2 + IMAGE_TOKENS)
        + (4 + 4 + text_tokens("get") + text_tokens('{"a":1}'))
        + (4 + text_tokens("ok") + text_tokens("c1"))
        + (4 + text_tokens("get") + text_tokens("Get it.") + text_tokens('{"type":"object"}'))
    )
    assert prompt_tokens("sys", messages, tools) == expected


def test_answer_counts_text_and_each_tool_call_once() -> None:
    events = [
        TextDelta("abc"),
        TextDelta("def"),
        ToolCallDelta(0, id="c1", name="get"),
        ToolCallDelta(0, arguments_delta='{"a":'),
        ToolCallDelta(0, arguments_delta="1}"),
        Finish(FinishReason.TOOL_CALLS),
    ]
    assert answer_tokens(events) == (6 + 3 + 7 + 2) // 3 + 4
    counter = AnswerCounter()
    assert counter.tokens == 0


def test_a_cut_short_answer_is_charged_its_reported_input_else_its_prompt_estimated() -> None:
    prompt = ("", (Message(Role.USER, (TextPart("abcdef"),)),), ())
    # Anthropic's message_start: the input and cache reads, one output token so far.
    partial = Usage(input_tokens=900, output_tokens=1, cached_input_tokens=800)
    assert cut_short(partial, prompt, 5) == Usage(
        input_tokens=900, output_tokens=5, cached_input_tokens=800, estimated=True
    )
    assert cut_short(partial, prompt, 0).output_tokens == 1  # the report's, when more
    assert cut_short(None, prompt, 5) == Usage(
        input_tokens=prompt_tokens(*prompt), output_tokens=5, estimated=True
    )
