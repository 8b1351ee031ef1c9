"""The conversation record (``_conversation.py``): fed events, no sockets.

Most conversations are played against the fake server's own model of the service
(``testing/_model.py``): each client event goes to the record and to the model, and every event
the model answers with goes back to the record, as a session would feed it. Every replay is
then validated against the ``openai`` package's typed client events, and played into a fresh
model, which must accept every event and end up holding the conversation the replay carries.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any, Literal

import pydantic
import pytest
from openai.types.beta.realtime import ConversationItemCreateEvent as BetaItemCreate
from openai.types.beta.realtime import SessionUpdateEvent as BetaSessionUpdate
from openai.types.realtime import ConversationItemCreateEvent as GAItemCreate
from openai.types.realtime import SessionUpdateEvent as GASessionUpdate

from model_checks import undeclared_fields
from trio_realtime._conversation import (
    MAX_DEPTH,
    ConversationRecord,
    ConversationStatistics,
    Replay,
)
from trio_realtime.testing import Behavior, FunctionCall, Script
from trio_realtime.testing._ids import IdFactory
from trio_realtime.testing._model import ConnectionModel, Refuse, Send
from trio_realtime.testing._protocol import ResponseStream

Dialect = Literal["ga", "beta"]
DIALECTS: tuple[Dialect, ...] = ("ga", "beta")
SESSION_TYPE = {"ga": {"type": "realtime"}, "beta": {}}
ASSISTANT_TEXT = {"ga": "output_text", "beta": "text"}
TRANSCRIPT_DONE = {
    "ga": "response.output_audio_transcript.done",
    "beta": "response.audio_transcript.done",
}


# -- validating replayed events against the openai package's models ---------------------------

MODELS: dict[tuple[Dialect, str], type[pydantic.BaseModel]] = {
    ("ga", "conversation.item.create"): GAItemCreate,
    ("ga", "session.update"): GASessionUpdate,
    ("beta", "conversation.item.create"): BetaItemCreate,
    ("beta", "session.update"): BetaSessionUpdate,
}
#: The typed model each replayed GA item must validate as (the union picks by role).
GA_ITEM_MODELS = {
    ("message", "user"): "RealtimeConversationItemUserMessage",
    ("message", "assistant"): "RealtimeConversationItemAssistantMessage",
    ("message", "system"): "RealtimeConversationItemSystemMessage",
    ("function_call", None): "RealtimeConversationItemFunctionCall",
    ("function_call_output", None): "RealtimeConversationItemFunctionCallOutput",
}


def validate(dialect: Dialect, event: dict[str, Any]) -> None:
    """``event`` is a valid client event of ``dialect``: no undeclared field, nothing coerced."""
    model = MODELS[dialect, event["type"]].model_validate(event)
    assert not undeclared_fields(model), (
        f"undeclared fields in {event['type']}: {undeclared_fields(model)}"
    )
    assert model.model_dump(mode="json", exclude_unset=True) == event
    if dialect == "ga" and event["type"] == "conversation.item.create":
        item = event["item"]
        expected = GA_ITEM_MODELS[item["type"], item.get("role")]
        assert type(model.item).__name__ == expected  # type: ignore[attr-defined]
    if event["type"] == "conversation.item.create":
        assert "previous_item_id" not in event  # appended, in order


def check_replay(dialect: Dialect, replay: Replay) -> None:
    for event in replay.events:
        validate(dialect, event)
    kinds = [event["type"] for event in replay.events]
    assert "session.update" not in kinds[1:]  # only first, if at all


@pytest.mark.parametrize(
    ("dialect", "event"),
    [
        # A GA assistant message with beta's part type.
        (
            "ga",
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "x"}],
                },
            },
        ),
        # A beta assistant message with GA's part type.
        (
            "beta",
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "x"}],
                },
            },
        ),
        # A field the model does not declare.
        (
            "ga",
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "c", "output": "", "x": 1},
            },
        ),
        # GA session.update without its type.
        ("ga", {"type": "session.update", "session": {"instructions": "x"}}),
    ],
)
def test_validation_catches_wrong_shapes(dialect: Dialect, event: dict[str, Any]) -> None:
    with pytest.raises((pydantic.ValidationError, AssertionError)):
        validate(dialect, event)


# -- a record linked to the fake service's model ----------------------------------------------


class Link:
    """A record fed as a session would feed it, by a fake service's model of one connection."""

    def __init__(
        self,
        dialect: Dialect,
        record: ConversationRecord | None = None,
        ids: IdFactory | None = None,
    ) -> None:
        self.dialect = dialect
        self.ids = IdFactory() if ids is None else ids
        self.model = ConnectionModel.new(dialect, ids=self.ids, model="gpt-realtime", expires_at=0)
        self.record = ConversationRecord() if record is None else record
        self._event_ids = itertools.count(1)

    def send(
        self, event: dict[str, Any], *, fed: bool = True, answers_first: bool = False
    ) -> list[dict[str, Any]]:
        """Send a client event: the record sees it (unless not ``fed``), then every answer;
        returns the answers. ``answers_first``: the record sees the answers before the event
        (the reader ran before the writer noted what it sent)."""
        event = {**event, "event_id": f"evt_{next(self._event_ids)}"}
        if fed and not answers_first:
            self.record.client_event(event)
        answers: list[dict[str, Any]] = []
        for action in self.model.receive(event, Behavior()):
            if isinstance(action, Send):
                answers.append(action.event)
            elif isinstance(action, Refuse):
                answers.append(action.rejection.event(event["event_id"]))
        for answer in answers:
            self.record.server_event(answer)
        if fed and answers_first:
            self.record.client_event(event)
        return answers

    def create(self, item: dict[str, Any], previous_item_id: str | None = None) -> str:
        """Create an item; returns the id the server reports."""
        event: dict[str, Any] = {"type": "conversation.item.create", "item": item}
        if previous_item_id is not None:
            event["previous_item_id"] = previous_item_id
        answers = self.send(event)
        assert answers[0]["type"] != "error", answers[0]
        item_id: str = answers[0]["item"]["id"]
        return item_id

    def say(self, text: str) -> str:
        return self.create(
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        )

    def speak(self, transcript: str | None) -> str:
        """The user speaks: voice activity commits the audio; its transcription may follow."""
        self.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()}
        )
        answers = self.send({"type": "input_audio_buffer.commit"})
        item_id: str = answers[0]["item_id"]
        if transcript is not None:
            self.record.server_event(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                }
            )
        return item_id

    def respond(self, script: Script, *, stop_after: str | None = None) -> list[dict[str, Any]]:
        """A response the server runs (as voice activity starts them); returns its output.
        ``stop_after``: the connection is lost after the first event of that type."""
        response_id = self.model.start_server_response()
        stream = ResponseStream(
            self.dialect,
            response_id,
            script,
            self.ids,
            in_band=True,
            previous_item_id=self.model.conversation.last_id,
        )
        for event, _ in stream.events():
            self.record.server_event(event)
            self.model.conversation.take_from(stream)
            if event["type"] == stop_after:
                return stream.output
        self.model.slots.finish(response_id)
        self.record.server_event(
            {"type": "response.done", "response": {"id": response_id, "output": stream.output}}
        )
        return stream.output

    def items(self) -> list[dict[str, Any]]:
        return list(self.model.conversation.items.values())


def replay_into(
    dialect: Dialect,
    replay: Replay,
    record: ConversationRecord | None = None,
    *,
    old: Link | None = None,
    fed: bool = True,
) -> Link:
    """Play a replay into a new connection (to the same service as ``old``, whose ids it keeps
    handing out): every event must be accepted. ``fed``: the record sees the replay's events."""
    check_replay(dialect, replay)
    link = Link(dialect, record, ids=None if old is None else old.ids)
    for event in replay.events:
        answers = link.send(event, fed=fed)
        assert all(answer["type"] != "error" for answer in answers), answers
    return link


def texts(items: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Each item, briefly: ``(role, text...)`` for messages, ``(type, call_id, ...)`` else."""
    brief: list[tuple[str, ...]] = []
    for item in items:
        if item["type"] == "message":
            words = [part.get("text") or part.get("transcript") or "" for part in item["content"]]
            brief.append((item["role"], *words))
        elif item["type"] == "function_call":
            brief.append(("call", item["call_id"], item["name"], item["arguments"]))
        else:
            brief.append(("output", item["call_id"], item["output"]))
    return brief


def created_items(replay: Replay) -> list[dict[str, Any]]:
    return [e["item"] for e in replay.events if e["type"] == "conversation.item.create"]


# -- text, audio, transcripts ------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_text_conversation_replays_in_order_with_the_dialects_part_types(
    dialect: Dialect,
) -> None:
    link = Link(dialect)
    system = link.create(
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Rule"}]}
    )
    user = link.say("Hello")
    (answer,) = link.respond(Script(text="Hi there"))
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert replay.events == (
        {
            "type": "conversation.item.create",
            "item": {
                "id": system,
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Rule"}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "id": user,
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hello"}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "id": answer["id"],
                "type": "message",
                "role": "assistant",
                "content": [{"type": ASSISTANT_TEXT[dialect], "text": "Hi there"}],
            },
        },
    )
    assert (replay.dropped, replay.warnings) == (0, ())
    again = replay_into(dialect, replay)
    assert [item["id"] for item in again.items()] == [system, user, answer["id"]]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_audio_carries_over_as_its_transcripts(dialect: Dialect) -> None:
    link = Link(dialect)
    link.speak("What time is it?")
    link.respond(Script(text=None, audio=bytes(9600), transcript="Noon."))
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [("user", "What time is it?"), ("assistant", "Noon.")]
    assert [item["content"][0]["type"] for item in created_items(replay)] == [
        "input_text",
        ASSISTANT_TEXT[dialect],
    ]
    assert replay.warnings == ()
    assert texts(replay_into(dialect, replay).items()) == texts(created_items(replay))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_assistant_transcript_from_its_done_event_when_the_item_never_finished(
    dialect: Dialect,
) -> None:
    """The connection is lost after the transcript's done but before the item's: the record
    still knows what was said."""
    link = Link(dialect)
    link.say("Hello")
    link.respond(
        Script(text=None, audio=bytes(9600), transcript="Partly."),
        stop_after=TRANSCRIPT_DONE[dialect],
    )
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [("user", "Hello"), ("assistant", "Partly.")]
    check_replay(dialect, replay)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_user_audio_without_transcription_is_left_out_with_a_warning(dialect: Dialect) -> None:
    link = Link(dialect)
    silent = link.speak(None)
    link.speak("Second try")
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [("user", "Second try")]
    assert replay.dropped == 0
    (warning,) = replay.warnings
    assert silent in warning
    assert "transcription" in warning
    replay_into(dialect, replay)


def test_transcription_arriving_before_the_items_report_is_kept() -> None:
    record = ConversationRecord()
    record.server_event({"type": "input_audio_buffer.committed", "item_id": "item_a"})
    audio = {"type": "message", "role": "user", "content": [{"type": "input_audio"}]}
    record.server_event({"type": "conversation.item.added", "item": {"id": "item_a", **audio}})
    record.server_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_a",
            "content_index": 0,
            "transcript": "Heard",
        }
    )
    # The done report comes later, with a null transcript: it must not erase it.
    empty = {**audio, "content": [{"type": "input_audio", "transcript": None}]}
    record.server_event({"type": "conversation.item.done", "item": {"id": "item_a", **empty}})
    replay = record.replay(dialect="ga", max_items=10)
    assert texts(created_items(replay)) == [("user", "Heard")]


def test_audio_bytes_are_never_kept() -> None:
    record = ConversationRecord()
    audio = base64.b64encode(bytes(48000)).decode()
    record.client_event(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": audio, "transcript": "Spoken"}],
            },
        }
    )
    assert "audio" not in record.items()[0]["content"][0]
    # The acknowledgement leaves the audio out, and its transcript null: the client's stays.
    ack = {
        "id": "item_a",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    record.server_event({"type": "conversation.item.created", "item": ack})
    assert record.statistics().unacknowledged == 0
    replay = record.replay(dialect="beta", max_items=10)
    assert texts(created_items(replay)) == [("user", "Spoken")]


# -- function calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_function_calls_carry_over_with_their_outputs(dialect: Dialect) -> None:
    link = Link(dialect)
    link.say("Weather?")
    output = link.respond(
        Script(
            text=None,
            function_calls=(
                FunctionCall("weather", '{"city": "Oslo"}', "call_1"),
                FunctionCall("time", "{}", "call_2"),
            ),
        )
    )
    assert [item["type"] for item in output] == ["function_call", "function_call"]
    link.create({"type": "function_call_output", "call_id": "call_1", "output": "rain"})
    # call_2 is still running when the connection is lost: it stays, so its output can follow.
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [
        ("user", "Weather?"),
        ("call", "call_1", "weather", '{"city": "Oslo"}'),
        ("call", "call_2", "time", "{}"),
        ("output", "call_1", "rain"),
    ]
    assert replay.warnings == ()
    again = replay_into(dialect, replay, old=link)
    # The application answers the call still running, on the new connection: accepted.
    again.create({"type": "function_call_output", "call_id": "call_2", "output": "noon"})


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_call_cut_off_midway_is_left_out(dialect: Dialect) -> None:
    link = Link(dialect)
    link.say("Weather?")
    link.respond(
        Script(text=None, function_calls=(FunctionCall("weather", '{"city": "Oslo"}', "c"),)),
        stop_after="response.function_call_arguments.delta",
    )
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [("user", "Weather?")]
    (warning,) = replay.warnings
    assert "in_progress" in warning


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_output_whose_call_was_deleted_is_left_out(dialect: Dialect) -> None:
    link = Link(dialect)
    link.respond(Script(text=None, function_calls=(FunctionCall("f", "{}", "call_x"),)))
    call_id = link.items()[0]["id"]
    output = link.create({"type": "function_call_output", "call_id": "call_x", "output": "1"})
    link.send({"type": "conversation.item.delete", "item_id": call_id})
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert created_items(replay) == []
    (warning,) = replay.warnings
    assert output in warning
    assert "call_x" in warning


# -- deletions, truncations, insertions --------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_deleted_items_are_not_replayed(dialect: Dialect) -> None:
    link = Link(dialect)
    first = link.say("one")
    link.say("two")
    link.send({"type": "conversation.item.delete", "item_id": first})
    assert texts(created_items(link.record.replay(dialect=dialect, max_items=10))) == [
        ("user", "two")
    ]
    # A deletion the record learns only from the server (another client, a lost send).
    link.record.server_event(
        {"type": "conversation.item.deleted", "item_id": link.items()[0]["id"]}
    )
    assert link.record.replay(dialect=dialect, max_items=10).events == ()
    assert link.record.statistics().items == 0


def test_a_report_already_on_its_way_does_not_bring_a_deleted_item_back() -> None:
    record = ConversationRecord()
    item = {"id": "item_a", "type": "message", "role": "assistant", "content": []}
    record.server_event({"type": "conversation.item.added", "item": item})
    record.client_event({"type": "conversation.item.delete", "item_id": "item_a"})
    done = {**item, "content": [{"type": "output_text", "text": "late"}]}
    record.server_event({"type": "conversation.item.done", "item": done})
    assert record.items() == []
    # A client may create an item under an id it deleted before.
    record.client_event({"type": "conversation.item.create", "item": done})
    record.server_event({"type": "conversation.item.added", "item": done})
    assert record.items() == [done]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_truncated_assistant_audio_is_left_out_with_a_warning(dialect: Dialect) -> None:
    link = Link(dialect)
    link.say("Tell me a story")
    (story,) = link.respond(Script(text=None, audio=bytes(48000), transcript="Once upon a time"))
    answers = link.send(
        {
            "type": "conversation.item.truncate",
            "item_id": story["id"],
            "content_index": 0,
            "audio_end_ms": 300,
        }
    )
    assert answers[0]["type"] == "conversation.item.truncated"
    link.say("Stop")
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [("user", "Tell me a story"), ("user", "Stop")]
    (warning,) = replay.warnings
    assert story["id"] in warning
    assert "truncated" in warning


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("root", ["new", "a", "b", "c"]),
        ("a", ["a", "new", "b", "c"]),
        ("c", ["a", "b", "c", "new"]),
        (None, ["a", "b", "c", "new"]),
    ],
)
def test_previous_item_id_places_items_as_the_service_does(
    dialect: Dialect, where: str | None, expected: list[str]
) -> None:
    link = Link(dialect)
    ids = {text: link.say(text) for text in ("a", "b", "c")}
    after = ids.get(where, where) if where is not None else None
    link.create(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "new"}]},
        previous_item_id=after,
    )
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert [words for _, words in texts(created_items(replay))] == expected
    assert texts(link.items()) == texts(created_items(replay))  # the service's own order
    assert [i["id"] for i in replay_into(dialect, replay).items()] == [
        i["id"] for i in link.items()
    ]


def test_server_items_are_placed_after_their_previous_item() -> None:
    record = ConversationRecord()
    for item_id, previous in [("a", None), ("c", "a"), ("b", "a"), ("d", "unknown"), ("e", None)]:
        record.server_event(
            {
                "type": "conversation.item.created",
                "previous_item_id": previous,
                "item": {
                    "id": item_id,
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": item_id}],
                },
            }
        )
    # Null or unknown: last (some servers send null for every item).
    assert [item["id"] for item in record.items()] == ["a", "b", "c", "d", "e"]


# -- acknowledgements of client items without ids ----------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_client_items_without_ids_get_the_servers_ids(dialect: Dialect) -> None:
    """Creates sent back to back, their acknowledgements interleaved with items the server makes
    (committed audio, a response's output): each create gets its own id, nothing is doubled."""
    link = Link(dialect)
    record = link.record
    same = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    events = [
        {"type": "conversation.item.create", "event_id": "e1", "item": same},
        {"type": "conversation.item.create", "event_id": "e2", "item": same},
        {
            "type": "conversation.item.create",
            "event_id": "e3",
            "item": {"type": "function_call_output", "call_id": "c9", "output": "x"},
        },
        # Shaped like the audio voice activity commits, and put first.
        {
            "type": "conversation.item.create",
            "event_id": "e4",
            "previous_item_id": "root",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": "AAAA", "transcript": None}],
            },
        },
    ]
    for event in events:
        record.client_event(event)
    assert record.statistics() == ConversationStatistics(
        items=4, unacknowledged=4, forgotten=0, pending_updates=0
    )
    # The server made an audio item and started a response before reading the creates.
    link.speak("Spoken")
    link.respond(Script(text="Hi"), stop_after="response.content_part.added")
    # Now it reads them (the model is fed them directly; the record saw them already).
    for event in events:
        for action in link.model.receive(event, Behavior()):
            assert isinstance(action, Send)
            record.server_event(action.event)
    assert record.statistics().unacknowledged == 0
    # The record holds what the service holds, in its order, under its ids.
    assert [item["id"] for item in record.items()] == [item["id"] for item in link.items()]
    replay = record.replay(dialect=dialect, max_items=10)
    assert texts(created_items(replay)) == [
        ("user", "Spoken"),
        ("user", "Hi"),
        ("user", "Hi"),
    ]
    # The response's item never finished; the client's audio has no transcription; the output's
    # call is not in the conversation.
    assert len(replay.warnings) == 3


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("with_id", [False, True], ids=["server-id", "client-id"])
def test_the_record_is_the_same_whichever_of_a_create_and_its_acknowledgement_comes_first(
    dialect: Dialect, with_id: bool
) -> None:
    """The writer notes a create and the reader its acknowledgement: in either order, each
    item is recorded once, in the service's order, under the service's ids, and replayed once."""
    records = []
    for answers_first in (False, True):
        link = Link(dialect)
        for n, text in enumerate(("one", "two", "one")):
            item: dict[str, Any] = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
            if with_id:
                item["id"] = f"item_mine_{n}"
            link.send(
                {"type": "conversation.item.create", "item": item}, answers_first=answers_first
            )
        link.speak("Spoken")
        link.respond(Script(text="Reply"))
        assert [item["id"] for item in link.record.items()] == [item["id"] for item in link.items()]
        assert link.record.statistics().unacknowledged == 0
        replay = link.record.replay(dialect=dialect, max_items=10)
        assert texts(created_items(replay)) == [
            ("user", "one"),
            ("user", "two"),
            ("user", "one"),
            ("user", "Spoken"),
            ("assistant", "Reply"),
        ]
        replay_into(dialect, replay, old=link)
        records.append((link.record.items(), replay.events))
    assert records[0] == records[1]


def test_a_create_is_not_matched_to_an_item_that_contradicts_it() -> None:
    record = ConversationRecord()
    record.client_event(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "A"}],
            },
        }
    )
    # Another client's item (a sideband connection): different text, so not ours.
    other = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "B"}]}
    record.server_event({"type": "conversation.item.added", "item": {"id": "item_b", **other}})
    assert record.statistics().unacknowledged == 1
    ours = {**other, "content": [{"type": "input_text", "text": "A"}]}
    record.server_event({"type": "conversation.item.added", "item": {"id": "item_a", **ours}})
    assert record.statistics().unacknowledged == 0
    assert [item["id"] for item in record.items()] == ["item_a", "item_b"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_rejected_create_is_taken_out(dialect: Dialect) -> None:
    link = Link(dialect)
    link.say("kept")
    answers = link.send(
        {
            "type": "conversation.item.create",
            "previous_item_id": "item_nowhere",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "x"}],
            },
        }
    )
    assert answers[0]["error"]["code"] == "item_not_found"
    assert texts(link.record.items()) == [("user", "kept")]
    assert link.record.statistics().unacknowledged == 0


@pytest.mark.parametrize("fed", [True, False])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_client_ids_are_kept_and_a_replays_acknowledgements_land_on_the_same_items(
    dialect: Dialect, fed: bool
) -> None:
    link = Link(dialect)
    mine = link.create(
        {
            "id": "msg_mine",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}],
        }
    )
    assert mine == "msg_mine"
    link.respond(Script(text="Hello"))
    before = link.record.items()
    replay = link.record.replay(dialect=dialect, max_items=10)
    # The new server's answers (and perhaps the replay itself) go to the same record.
    again = replay_into(dialect, replay, record=link.record, old=link, fed=fed)
    assert [item["id"] for item in again.items()] == [item["id"] for item in before]
    assert link.record.statistics().items == 2
    assert link.record.statistics().unacknowledged == 0
    assert link.record.replay(dialect=dialect, max_items=10) == replay


@pytest.mark.parametrize("fed", [True, False])
def test_an_unacknowledged_create_is_replayed_with_the_records_id(fed: bool) -> None:
    """Sent just before the connection was lost: the replay names it, and the new server's
    acknowledgement lands on it whether or not the session feeds the replay to the record."""
    record = ConversationRecord()
    old = Link("ga", record)
    old.say("acknowledged")
    record.client_event(
        {
            "type": "conversation.item.create",
            "event_id": "lost",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "in flight"}],
            },
        }
    )
    replay = record.replay(dialect="ga", max_items=10)
    assert [item["id"][:8] for item in created_items(replay)] == ["item_000", "item_trc"]
    new = replay_into("ga", replay, record=record, old=old, fed=fed)
    assert record.statistics() == ConversationStatistics(
        items=2, unacknowledged=0, forgotten=0, pending_updates=0
    )
    assert [item["id"] for item in record.items()] == [item["id"] for item in new.items()]
    assert record.replay(dialect="ga", max_items=10) == replay


# -- the configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        # Objects are merged field by field.
        (
            [
                {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}},
                {"audio": {"output": {"voice": "marin"}}, "instructions": "Be brief"},
            ],
            {
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                    "output": {"voice": "marin"},
                },
                "instructions": "Be brief",
            },
        ),
        # Lists are replaced whole.
        (
            [
                {"tools": [{"type": "function", "name": "a", "parameters": {}}]},
                {"tools": [{"type": "function", "name": "b", "parameters": {}}]},
            ],
            {"tools": [{"type": "function", "name": "b", "parameters": {}}]},
        ),
        # An explicit null clears, and is kept (the new server's default may differ).
        (
            [
                {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}},
                {"audio": {"input": {"noise_reduction": None, "turn_detection": None}}},
            ],
            {"audio": {"input": {"noise_reduction": None, "turn_detection": None}}},
        ),
        # Null, then an object again.
        (
            [
                {"audio": {"input": {"turn_detection": None}}},
                {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}}},
            ],
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}}},
        ),
        # Turn detection merges while its type stays (server VAD by default)...
        (
            [
                {"audio": {"input": {"turn_detection": {"threshold": 0.7}}}},
                {
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad", "create_response": False}
                        }
                    }
                },
            ],
            {
                "audio": {
                    "input": {
                        "turn_detection": {
                            "threshold": 0.7,
                            "type": "server_vad",
                            "create_response": False,
                        }
                    }
                }
            },
        ),
        # ...and starts afresh when it changes.
        (
            [
                {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}}},
                {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
            ],
            {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
        ),
    ],
)
def test_session_updates_merge_as_the_service_merges_them(
    updates: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    link = Link("ga")
    for update in updates:
        answers = link.send({"type": "session.update", "session": {"type": "realtime", **update}})
        assert answers[0]["type"] == "session.updated", answers
    assert link.record.configuration() == {"type": "realtime", **expected}
    replay = link.record.replay(dialect="ga", max_items=10)
    (event,) = replay.events
    assert event == {"type": "session.update", "session": {"type": "realtime", **expected}}
    # The new service ends with the same effective configuration as the old one.
    again = replay_into("ga", replay)
    old_session = {k: v for k, v in link.model.session.value.items() if k != "id"}
    new_session = {k: v for k, v in again.model.session.value.items() if k != "id"}
    assert new_session == old_session


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_session_update_has_the_dialects_shape(dialect: Dialect) -> None:
    link = Link(dialect)
    body = (
        {"output_modalities": ["text"], "instructions": "Hi"}
        if dialect == "ga"
        else {"modalities": ["text"], "instructions": "Hi"}
    )
    link.send({"type": "session.update", "session": {**SESSION_TYPE[dialect], **body}})
    link.say("Hello")
    replay = link.record.replay(dialect=dialect, max_items=10)
    assert replay.events[0] == {
        "type": "session.update",
        "session": {**SESSION_TYPE[dialect], **body},
    }
    assert replay.events[1]["type"] == "conversation.item.create"
    replay_into(dialect, replay)


def test_the_type_is_added_for_ga_and_removed_for_beta() -> None:
    record = ConversationRecord()
    record.client_event({"type": "session.update", "session": {"instructions": "Hi"}})
    ga = record.replay(dialect="ga", max_items=1).events
    assert ga == (
        {"type": "session.update", "session": {"type": "realtime", "instructions": "Hi"}},
    )
    record.client_event({"type": "session.update", "session": {"type": "realtime"}})
    beta = record.replay(dialect="beta", max_items=1).events
    assert beta == ({"type": "session.update", "session": {"instructions": "Hi"}},)
    check_replay("ga", Replay(ga, 0, ()))
    check_replay("beta", Replay(beta, 0, ()))


def test_no_session_update_when_the_application_set_nothing() -> None:
    link = Link("ga")
    link.say("Hello")
    assert [e["type"] for e in link.record.replay(dialect="ga", max_items=10).events] == [
        "conversation.item.create"
    ]
    assert link.record.configuration() == {}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_rejected_session_update_is_taken_out(dialect: Dialect) -> None:
    link = Link(dialect)
    link.send({"type": "session.update", "session": {**SESSION_TYPE[dialect], "instructions": "A"}})
    answers = link.send(
        {
            "type": "session.update",
            "session": {**SESSION_TYPE[dialect], "bogus": 1, "instructions": "B"},
        }
    )
    assert answers[0]["error"]["code"] == "unknown_parameter"
    assert link.record.configuration() == {**SESSION_TYPE[dialect], "instructions": "A"}
    assert link.record.statistics().pending_updates == 0
    replay_into(dialect, link.record.replay(dialect=dialect, max_items=10))


def test_an_unanswered_session_update_still_counts() -> None:
    record = ConversationRecord()
    record.client_event(
        {"type": "session.update", "event_id": "e1", "session": {"instructions": "A"}}
    )
    assert record.configuration() == {"instructions": "A"}
    assert record.statistics().pending_updates == 1
    record.server_event({"type": "session.updated", "session": {"instructions": "server's"}})
    assert record.configuration() == {"instructions": "A"}  # never the server's own view
    assert record.statistics().pending_updates == 0


# -- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_max_items_drops_the_oldest_with_a_warning(dialect: Dialect) -> None:
    link = Link(dialect)
    for text in ("one", "two", "three", "four"):
        link.say(text)
    replay = link.record.replay(dialect=dialect, max_items=2)
    assert texts(created_items(replay)) == [("user", "three"), ("user", "four")]
    assert replay.dropped == 2
    (warning,) = replay.warnings
    assert "2 oldest" in warning
    assert "max_items=2" in warning
    assert link.record.replay(dialect=dialect, max_items=0).dropped == 4
    replay_into(dialect, replay)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_max_items_takes_an_output_with_its_call(dialect: Dialect) -> None:
    link = Link(dialect)
    link.respond(Script(text=None, function_calls=(FunctionCall("f", "{}", "call_1"),)))
    link.create({"type": "function_call_output", "call_id": "call_1", "output": "1"})
    link.say("after")
    replay = link.record.replay(dialect=dialect, max_items=2)
    assert texts(created_items(replay)) == [("user", "after")]
    assert replay.dropped == 2
    replay_into(dialect, replay)


def test_the_record_forgets_the_oldest_beyond_its_bound() -> None:
    link = Link("ga", ConversationRecord(max_items=3))
    for text in ("one", "two", "three", "four", "five"):
        link.say(text)
    assert texts(link.record.items()) == [("user", "three"), ("user", "four"), ("user", "five")]
    assert link.record.statistics() == ConversationStatistics(
        items=3, unacknowledged=0, forgotten=2, pending_updates=0
    )
    replay = link.record.replay(dialect="ga", max_items=10)
    assert replay.dropped == 0
    assert any("2 older items were forgotten" in warning for warning in replay.warnings)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.replay(dialect="ga", max_items=-1), "max_items"),
        (lambda r: r.replay(dialect="v1", max_items=1), "dialect"),
        (lambda r: ConversationRecord(max_items=0), "max_items"),
    ],
)
def test_bad_arguments_are_refused(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(ConversationRecord())


def test_items_the_record_cannot_carry_are_named() -> None:
    record = ConversationRecord()
    for item in [
        {"id": "mcp", "type": "mcp_call", "name": "x"},
        {"id": "empty", "type": "message", "role": "assistant", "content": []},
        {
            "id": "ok",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Yes"}],
        },
    ]:
        record.server_event({"type": "conversation.item.added", "item": item})
    replay = record.replay(dialect="ga", max_items=10)
    assert texts(created_items(replay)) == [("assistant", "Yes")]
    assert [warning.split()[1] for warning in replay.warnings] == ["mcp", "empty"]
    # Irrelevant events change nothing; out-of-band output never enters the conversation.
    record.client_event({"type": "response.create"})
    record.server_event(
        {"type": "response.output_item.done", "item": {"id": "oob", "type": "message"}}
    )
    assert record.replay(dialect="ga", max_items=10) == replay


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": [value]}
    return value


@pytest.mark.parametrize("depth", [500, 5000])
def test_a_deeply_nested_item_never_recurses_without_bound(depth: int) -> None:
    """Issue 18, item 3: the record's copies once recursed (``copy.deepcopy``) as deep as the
    item; a hostile server's 500-deep item ended the session with a RecursionError."""
    record = ConversationRecord()
    deep = {
        "id": "item_deep",
        "type": "message",
        "role": "user",
        "content": [],
        "x": _nested(depth),
    }
    record.server_event({"type": "conversation.item.added", "item": deep})
    record.server_event({"type": "conversation.item.done", "item": deep})
    record.server_event({"type": "response.done", "response": {"id": "r", "output": [deep]}})
    assert not record.client_event(
        {"type": "conversation.item.create", "item": {**deep, "id": "item_mine"}}
    )
    assert not record.client_event({"type": "session.update", "session": _nested(depth)})
    assert record.items() == []
    assert record.configuration() == {}
    record.replay(dialect="ga", max_items=10)


def test_an_event_is_recorded_up_to_max_depth_containers_deep() -> None:
    def chain(depth: int) -> dict[str, Any]:  # ``depth`` dicts, one in the other
        value: dict[str, Any] = {}
        for _ in range(depth - 1):
            value = {"a": value}
        return value

    # The event is one level, its session the rest.
    record = ConversationRecord()
    assert record.client_event({"type": "session.update", "session": chain(MAX_DEPTH - 1)})
    assert not record.client_event({"type": "session.update", "session": chain(MAX_DEPTH)})


def test_items_nested_as_the_service_nests_them_are_recorded() -> None:
    record = ConversationRecord()
    shallow = {"id": "i", "type": "message", "role": "user", "content": [{"x": _nested(20)}]}
    record.server_event({"type": "conversation.item.added", "item": shallow})
    assert record.items() == [shallow]
    assert record.items()[0] is not shallow
