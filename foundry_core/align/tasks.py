"""Instruction tasks with checkable answers, built from the texts the model was
pretrained on.

Each task turns one line of a play into a question whose answer a rule can check: which
play the line is from (knowledge the model may have picked up in pretraining), and its
first or last word (reading the prompt and following the instruction). Lines are split
into train and held-out sets by a hash of their text, so a held-out line is never
trained on, under any task, and a repeated line ("Ay, my lord.") always falls on the
same side.

The Chinese track asks the same three questions of an idiom: which classical book it
comes from (the "play" task), and its first or last character.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from ..data.clean import split_words
from ..data.sources import Document

# "Ham." or "LADY MACBETH." on a line of its own
_SPEAKER = re.compile(r"^([A-Z][A-Za-z' ]{0,28})\.$")
_FIRST_ACT = re.compile(r"\n(ACT|Act) [IV1]")  # the cast list comes before it
_PUNCTUATION = '.,;:!?-"()[]，。；：！？、“”‘’《》（）'
# the first book an idiom's source quotation names: "汉·司马迁《史记·项羽本纪》"
_BOOK = re.compile(r"《([^》·]+)")
# short titles the dictionary also uses for three of the classics
_BOOK_ALIASES = {"诗": "诗经", "易": "周易", "书": "尚书"}
IDIOM_BOOKS = 12  # the most quoted books give the "play" task's answers


@dataclass(frozen=True)
class Line:
    """One line of verse or prose, with the play and the speaker it belongs to."""

    play: str
    speaker: str
    text: str

    @property
    def words(self) -> list[str]:
        return [
            w for w in (raw.strip(_PUNCTUATION) for raw in split_words(self.text)) if w
        ]

    @property
    def is_idiom(self) -> bool:
        """An idiom of the Chinese track: the only lines without a speaker."""
        return not self.speaker


@dataclass(frozen=True)
class Example:
    """One question and its reference answer."""

    task: str
    prompt: str
    answer: str
    line: Line


@dataclass(frozen=True)
class PreferencePair:
    """Two answers to one prompt, the better one first. `kind` says how the worse one
    was made."""

    prompt: str
    chosen: str
    rejected: str
    task: str
    kind: str


def play_lines(
    documents: Sequence[Document], min_words: int = 3, max_words: int = 10
) -> list[Line]:
    """Every spoken line of min_words..max_words words, from speeches that start with a
    speaker's name.

    Poems (no speakers), stage directions (in brackets) and the cast lists at the head
    of each play (names in capitals) give no lines.
    """
    lines = []
    for doc in documents:
        first_act = _FIRST_ACT.search(doc.text)
        for speech in doc.text[first_act.start() if first_act else 0 :].split("\n\n"):
            first, *rest = speech.strip("\n").split("\n")
            match = _SPEAKER.match(first.strip())
            if not match or not rest:
                continue
            speaker = (
                match.group(1).title() if match.group(1).isupper() else match.group(1)
            )
            for text in rest:
                text = text.strip()
                line = Line(doc.title, speaker, text)
                shouting = any(len(w) > 1 and w.isupper() for w in line.words)
                if (
                    text
                    and "[" not in text
                    and not shouting
                    and min_words <= len(line.words) <= max_words
                ):
                    lines.append(line)
    return lines


def idiom_lines(documents: Sequence[Document], books: int = IDIOM_BOOKS) -> list[Line]:
    """One line per idiom whose source quotation names one of the `books` most quoted
    books, with the book in place of the play (and no speaker).

    Entries are those of `sources.chinese`: the idiom on the first line, its source on
    a line starting "出处：".
    """
    found = []
    for doc in documents:
        for entry in doc.text.split("\n\n"):
            idiom, *fields = entry.strip("\n").split("\n")
            source = next((f for f in fields if f.startswith("出处：")), "")
            match = _BOOK.search(source)
            if match:
                book = match.group(1)
                found.append(Line(_BOOK_ALIASES.get(book, book), "", idiom.strip()))
    counts = Counter(line.play for line in found)
    kept = {book for book, _ in counts.most_common(books)}
    return [line for line in found if line.play in kept]


def is_held_out(line: Line, fraction: float) -> bool:
    """A stable split by the line's text: equal texts always land on the same side."""
    digest = hashlib.sha256(" ".join(line.words).lower().encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _ask_play(line: Line) -> tuple[str, str]:
    if line.is_idiom:
        return f"这个成语出自哪部书？\n{line.text}", line.play
    return f"Which play is this line from?\n{line.speaker}: {line.text}", line.play


def _ask_first_word(line: Line) -> tuple[str, str]:
    if line.is_idiom:
        return f"这个成语的第一个字是什么？\n{line.text}", line.words[0]
    return f"What is the first word of this line?\n{line.text}", line.words[0]


def _ask_last_word(line: Line) -> tuple[str, str]:
    if line.is_idiom:
        return f"这个成语的最后一个字是什么？\n{line.text}", line.words[-1]
    return f"What is the last word of this line?\n{line.text}", line.words[-1]


TASKS: dict[str, Callable[[Line], tuple[str, str]]] = {
    "play": _ask_play,
    "first_word": _ask_first_word,
    "last_word": _ask_last_word,
}


def make_example(task: str, line: Line) -> Example:
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}': choose from {', '.join(TASKS)}")
    prompt, answer = TASKS[task](line)
    return Example(task, prompt, answer, line)


@dataclass(frozen=True)
class TaskSplits:
    train: list[Example]
    test: list[Example]
    plays: list[str]  # every possible answer of the "play" task


def build_tasks(
    documents: Sequence[Document],
    train_per_task: int,
    test_per_task: int,
    held_out: float = 0.2,
    seed: int = 0,
    tasks: Sequence[str] = tuple(TASKS),
) -> TaskSplits:
    """Examples of every task from disjoint train and held-out lines, drawn
    reproducibly from `seed`."""
    lines = play_lines(documents) + idiom_lines(documents)
    if not lines:
        raise ValueError(
            "no spoken lines found: the documents hold no plays with speaker names "
            "and no idioms with their sources"
        )
    rng = random.Random(seed)
    pools = {
        False: [ln for ln in lines if not is_held_out(ln, held_out)],
        True: [ln for ln in lines if is_held_out(ln, held_out)],
    }
    splits = {}
    for held, count in ((False, train_per_task), (True, test_per_task)):
        if len(pools[held]) < count:
            raise ValueError(
                f"only {len(pools[held])} "
                f"{'held-out' if held else 'training'} lines for "
                f"{count} examples per task: ask for fewer"
            )
        splits[held] = [
            make_example(task, line)
            for task in tasks
            for line in rng.sample(pools[held], count)
        ]
        rng.shuffle(splits[held])
    return TaskSplits(splits[False], splits[True], sorted({ln.play for ln in lines}))


def normalize_answer(text: str) -> str:
    return text.strip().strip(_PUNCTUATION).strip().lower()


def is_correct(example: Example, response: str) -> bool:
    """The rule: the response is the reference answer, nothing more (case and outer
    punctuation aside)."""
    return normalize_answer(response) == normalize_answer(example.answer)


def is_well_formed(example: Example, response: str, plays: Sequence[str]) -> bool:
    """A weaker rule: the response is the right kind of answer (one of the plays, or
    one word of the line), right or wrong. Rambling, empty or invented answers
    fail it."""
    options = plays if example.task == "play" else example.line.words
    return normalize_answer(response) in {normalize_answer(o) for o in options}


def wrong_answer(
    example: Example, rng: random.Random, plays: Sequence[str]
) -> tuple[str, str]:
    """A realistic wrong answer and what kind of mistake it is.

    The kinds are the mistakes a small model really makes: a wrong play, the word from
    the wrong end of the line, or the right answer followed by rambling the reader did
    not ask for.
    """
    words = example.line.words
    if rng.random() < 0.25:
        return f"{example.answer}: {example.line.text}", "rambling"
    if example.task == "play":
        return rng.choice([p for p in plays if p != example.answer]), "wrong play"
    other = {"first_word": words[-1], "last_word": words[0]}[example.task]
    if normalize_answer(other) == normalize_answer(example.answer):
        other = words[len(words) // 2]
    return other, "wrong word"


def preference_pairs(
    examples: Sequence[Example], plays: Sequence[str], seed: int = 0
) -> list[PreferencePair]:
    """One pair per example: the reference answer is chosen, a realistic wrong
    one rejected."""
    rng = random.Random(seed)
    pairs = []
    for ex in examples:
        rejected, kind = wrong_answer(ex, rng, plays)
        pairs.append(PreferencePair(ex.prompt, ex.answer, rejected, ex.task, kind))
    return pairs


def drop_ties(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Pairs whose two answers are the same teach nothing (and make DPO's loss
    constant): drop them, returning how many were dropped so the caller can say so."""
    kept = [
        p for p in pairs if normalize_answer(p.chosen) != normalize_answer(p.rejected)
    ]
    return kept, len(pairs) - len(kept)
