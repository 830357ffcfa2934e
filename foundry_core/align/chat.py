"""Chat templates: how a conversation becomes one token sequence, and which of its
tokens are trained.

A chat model sees a conversation as plain tokens with markers around each turn. The
template fixes those markers; training and inference must use the same one, or the
model meets a format it never saw. Rendering produces segments, each flagged as trained
or not, and each segment is tokenized on its own, so the loss mask follows from the
template itself instead of being guessed back from the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")
Message = dict  # {"role": "user" | "assistant" | "system", "content": str}
# text (or one token id) and whether the loss is computed on it
Segment = tuple[str | int, bool]


@dataclass(frozen=True)
class ChatTemplate:
    """Turn markers around each message. `end_of_turn` closes an assistant answer and is
    trained too, because the model must learn to say when it is done; generation stops
    on it."""

    name: str
    header: Callable[[str], str]  # text before a message of this role
    footer: str  # text after every message (not trained)
    end_of_turn: Callable[[Tokenizer], int]
    # False: only assistant turns end with end_of_turn (Alpaca)
    close_every_turn: bool = True

    def segments(
        self, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> list[Segment]:
        check_messages(messages, need_assistant=not add_generation_prompt)
        out: list[Segment] = []
        for message in messages:
            trained = message["role"] == "assistant"
            out.append((self.header(message["role"]), False))
            out.append((message["content"], trained))
            if trained or self.close_every_turn:
                # a placeholder for the template's end-of-turn id
                out.append((EOT, trained))
            if self.footer:
                out.append((self.footer, False))
        if add_generation_prompt:
            out.append((self.header("assistant"), False))
        return out


EOT = -1  # stands for the end-of-turn token in segments until tokenization


def _chatml_header(role: str) -> str:
    return f"<|im_start|>{role}\n"


def _alpaca_header(role: str) -> str:
    return {"system": "", "user": "### Instruction:\n", "assistant": "### Response:\n"}[
        role
    ]


CHATML = ChatTemplate(
    "chatml", _chatml_header, "\n", lambda tok: tok.piece_to_id("<|im_end|>")
)
# Alpaca has no turn tokens of its own: a turn ends with the tokenizer's end-of-text
# token.
ALPACA = ChatTemplate(
    "alpaca", _alpaca_header, "\n\n", lambda tok: tok.eos_id, close_every_turn=False
)
TEMPLATES = {t.name: t for t in (CHATML, ALPACA)}


def get_template(name: str | ChatTemplate) -> ChatTemplate:
    if isinstance(name, ChatTemplate):
        return name
    if name not in TEMPLATES:
        raise ValueError(
            f"unknown chat template '{name}': choose one of {', '.join(TEMPLATES)}"
        )
    return TEMPLATES[name]


def check_messages(messages: Sequence[Message], need_assistant: bool) -> None:
    """Refuse malformed chats with a message that says what is wrong."""
    if not messages:
        raise ValueError("the chat is empty: give at least one user message")
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(
                f"message {i} must be a dict with role in {ROLES} and a string "
                f"content, got {m!r}"
            )
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise ValueError(
            "the chat has no assistant turn: there is nothing to train on "
            "(for a prompt to answer, use add_generation_prompt=True)"
        )


def render(
    messages: Sequence[Message],
    template: str | ChatTemplate = CHATML,
    add_generation_prompt: bool = False,
) -> str:
    """The chat as text, with the end-of-turn token written as <eot>: for reading, not
    for tokenizing."""
    parts = get_template(template).segments(messages, add_generation_prompt)
    return "".join("<eot>" if text == EOT else text for text, _ in parts)


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Message],
    template: str | ChatTemplate = CHATML,
    add_generation_prompt: bool = False,
) -> tuple[list[int], list[bool]]:
    """Token ids of the chat and, for each, whether the SFT loss is computed on it
    (assistant content and its end-of-turn token: yes; markers, system and user
    text: no)."""
    template = get_template(template)
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in template.segments(messages, add_generation_prompt):
        piece = (
            [template.end_of_turn(tokenizer)] if text == EOT else tokenizer.encode(text)
        )
        ids += piece
        trained += [is_trained] * len(piece)
    return ids, trained


def encode_prompt(
    tokenizer: Tokenizer,
    messages: Sequence[Message] | str,
    template: str | ChatTemplate = CHATML,
) -> list[int]:
    """The prompt ids a model continues: the chat so far, then the assistant header."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return encode_chat(tokenizer, messages, template, add_generation_prompt=True)[0]
