"""Exercise of chapter 06: writing a chat in the ChatML template, the text the SFT
model learns to continue."""

from __future__ import annotations

from ..align.chat import CHATML, render
from .check import Case, Exercise, Mistake, register

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who wrote Hamlet?"},
    {"role": "assistant", "content": "Shakespeare."},
]


def chatml_reference(messages, add_generation_prompt):
    return render(messages, CHATML, add_generation_prompt)


def _turn(message):
    return f"<|im_start|>{message['role']}\n{message['content']}<eot>\n"


register(
    Exercise(
        "chatml",
        "06",
        "The ChatML template: role headers, end-of-turn markers, a generation prompt",
        "easy",
        "chatml(messages, add_generation_prompt) -> str   # write the end-of-turn "
        "token as <eot>",
        chatml_reference,
        lambda: [
            Case("a system, user and assistant turn", (CHAT, False)),
            Case("a question waiting for its answer", (CHAT[:2], True)),
        ],
        [
            Mistake(
                "with add_generation_prompt, end with the assistant's header "
                "('<|im_start|>assistant\\n'): the model continues from there",
                lambda messages, prompt: "".join(_turn(m) for m in messages),
            ),
            Mistake(
                "every turn ends with <eot> and then a newline",
                lambda messages, prompt: (
                    "".join(_turn(m)[:-1] for m in messages)
                    + ("<|im_start|>assistant\n" if prompt else "")
                ),
            ),
        ],
    )
)
