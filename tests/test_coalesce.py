"""Deltas that arrive in one network read go out as one event (service/providers/coalesce.py),
and a stream whose caller keeps up still sees every delta as it came."""

from __future__ import annotations

import asyncio

from service.domain import Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageEvent
from service.providers.coalesce import Gatherer, coalesced, gathered
from service.providers.sse import ServerEvent
from tests.fakes.openai_fake import Scenario
from tests.provider_rigs import openai_rig


def test_runs_of_text_and_of_one_tool_calls_arguments_are_joined_in_order() -> None:
    events = [
        TextDelta("a"),
        TextDelta("b"),
        ToolCallDelta(0, id="c1", name="f"),
        ToolCallDelta(0, arguments_delta='{"x":'),
        ToolCallDelta(0, arguments_delta="1}"),
        ToolCallDelta(1, id="c2", name="g"),
        ToolCallDelta(1, arguments_delta="{}"),
        TextDelta("c"),
        UsageEvent(Usage(input_tokens=1)),
        Finish(FinishReason.STOP),
    ]
    assert coalesced(events) == [
        TextDelta("ab"),
        ToolCallDelta(0, id="c1", name="f", arguments_delta='{"x":1}'),
        ToolCallDelta(1, id="c2", name="g", arguments_delta="{}"),
        TextDelta("c"),
        UsageEvent(Usage(input_tokens=1)),
        Finish(FinishReason.STOP),
    ]


def test_the_events_before_an_error_in_one_read_are_kept() -> None:
    def parse(sse: ServerEvent) -> list[TextDelta]:
        if sse.data == b"boom":
            raise ValueError("the upstream sent an error event")
        return [TextDelta(sse.data.decode())]

    read = [ServerEvent("", b"x"), ServerEvent("", b"y"), ServerEvent("", b"boom")]
    events, failure = gathered(parse, read)
    assert events == [TextDelta("xy")]
    assert isinstance(failure, ValueError)


def test_an_attempts_first_delta_goes_out_before_the_rest_of_its_read_is_parsed() -> None:
    parsed: list[bytes] = []

    def parse(sse: ServerEvent) -> list[TextDelta | UsageEvent]:
        parsed.append(sse.data)
        if sse.data == b"role":
            return []  # a role-only chunk: no delta yet
        if sse.data == b"usage":
            return [UsageEvent(Usage(input_tokens=1))]
        return [TextDelta(sse.data.decode())]

    gatherer = Gatherer(parse)
    read = [ServerEvent("", data) for data in (b"role", b"a", b"b", b"c", b"usage")]
    batches = gatherer.batches(read)
    assert next(batches) == ([TextDelta("a")], None)
    assert parsed == [b"role", b"a"]  # nothing after the first delta parsed yet
    assert next(batches) == ([TextDelta("bc"), UsageEvent(Usage(input_tokens=1))], None)
    assert list(batches) == []
    # Later reads of the attempt go out whole, one batch each.
    later = [ServerEvent("", b"d"), ServerEvent("", b"e")]
    assert list(gatherer.batches(later)) == [([TextDelta("de")], None)]


def test_an_error_before_the_first_delta_keeps_what_came_before_it() -> None:
    def parse(sse: ServerEvent) -> list[UsageEvent]:
        if sse.data == b"boom":
            raise ValueError("the upstream sent an error event")
        return [UsageEvent(Usage(input_tokens=1))]

    read = [ServerEvent("", b"usage"), ServerEvent("", b"boom"), ServerEvent("", b"never")]
    ((events, failure),) = list(Gatherer(parse).batches(read))
    assert events == [UsageEvent(Usage(input_tokens=1))]
    assert isinstance(failure, ValueError)


async def test_a_slow_caller_gets_what_waited_as_fewer_larger_deltas() -> None:
    async with openai_rig() as rig:
        text = " ".join(f"w{i}" for i in range(200))
        rig.fake.push(Scenario(text=text, pieces=200))
        deltas = [
            e.text_delta.text
            async for e in rig.client.stream("chat", "hi")
            if e.WhichOneof("event") == "text_delta"
        ]
    assert "".join(deltas) == text
    assert len(deltas) < 200


async def test_a_caller_that_keeps_up_gets_each_delta_as_it_was_sent() -> None:
    async with openai_rig() as rig:
        rig.fake.push(Scenario(text="one two three four", pieces=4, chunk_delay_s=0.2))
        deltas = []
        async for e in rig.client.stream("chat", "hi"):
            if e.WhichOneof("event") == "text_delta":
                deltas.append(e.text_delta.text)
            await asyncio.sleep(0)
    assert "".join(deltas) == "one two three four"
    assert len(deltas) == 4
