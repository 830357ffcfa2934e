"""The files beside the weights that make a Hugging Face folder usable on its own: the
tokenizer, its special tokens and chat template, the stop tokens, and a model card.

`transformers` reads them as follows: `AutoTokenizer` loads tokenizer.json through the
`tokenizers` library (no sentencepiece, no protobuf), tokenizer_config.json names the
special tokens and holds the chat template that `apply_chat_template` renders, and
`generate` stops on the ids in generation_config.json.

tokenizer.json rebuilds our SentencePiece BPE in the `tokenizers` library's terms: the
same pieces under the same ids, spaces written as "▁", byte fallback for characters the
vocabulary lacks, the chat markers as special tokens, and a merge list in
SentencePiece's order (a piece with a higher score is made earlier). On the course's
corpora the two agree on every line (tests/test_export_hf.py). One difference is
pinned by a test rather than fixed: a literal "▁" in the input, which our Tokenizer
spells as its three UTF-8 bytes, is a space to the fast tokenizer, which cannot tell the
two apart after its normalizer has run.
"""

from __future__ import annotations

import json
from pathlib import Path

from .align.chat import ROLES, ChatTemplate, get_template
from .fileio import atomic_write_bytes
from .tokenizer import SPECIAL_TOKENS, Tokenizer

SPACE = "\u2581"  # "▁", SentencePiece's written space


def learned_pieces(tokenizer: Tokenizer) -> dict[str, int]:
    """The pieces BPE can build text from (characters and merges), by id: not the
    control pieces, the bytes or the special tokens."""
    sp, special = tokenizer.sp, set(tokenizer.special_token_ids().values())
    return {
        sp.id_to_piece(i): i
        for i in range(tokenizer.vocab_size)
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))
        and not sp.is_unused(i)
        and i not in special
    }


def bpe_merges(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """Every way of making each learned piece from two learned pieces, in the order
    SentencePiece applies them: the piece with the highest score first (ties by the
    ids of the two halves). SentencePiece stores pieces, not merges; a merge list is
    what the `tokenizers` BPE model needs."""
    pieces, sp = learned_pieces(tokenizer), tokenizer.sp
    merges = []
    for piece, i in pieces.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in pieces and right in pieces:
                merges.append(
                    (-sp.get_score(i), pieces[left], pieces[right], left, right)
                )
    return [(left, right) for *_, left, right in sorted(merges)]


def fast_tokenizer(tokenizer: Tokenizer):
    """Our tokenizer as a `tokenizers.Tokenizer` (what tokenizer.json serializes)."""
    from tokenizers import AddedToken, decoders, models, normalizers
    from tokenizers import Tokenizer as FastTokenizer

    sp = tokenizer.sp
    vocab = {sp.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
    bpe = models.BPE(
        vocab=vocab,
        merges=bpe_merges(tokenizer),
        unk_token=sp.id_to_piece(tokenizer.unk_id),
        byte_fallback=True,
        fuse_unk=True,
    )
    fast = FastTokenizer(bpe)
    # no dummy prefix and no other normalization: only spaces become "▁"
    fast.normalizer = normalizers.Replace(" ", SPACE)
    fast.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    fast.add_special_tokens(
        [
            AddedToken(piece, special=True, normalized=False)
            for piece in tokenizer.special_token_ids()
        ]
    )
    return fast


def end_of_turn_id(tokenizer: Tokenizer, template: str | ChatTemplate) -> int | None:
    """The template's end-of-turn id, or None for a tokenizer trained without it."""
    end = get_template(template).end_of_turn(tokenizer)
    return None if end == tokenizer.unk_id else end


def chat_template_jinja(template: str | ChatTemplate, tokenizer: Tokenizer) -> str:
    """`template` in the Jinja syntax of `apply_chat_template` and llama.cpp: the same
    headers, footer and end-of-turn token, so the rendered text tokenizes to the ids
    our ChatTemplate builds."""
    end_id = end_of_turn_id(tokenizer, template)
    if end_id is None:
        raise ValueError(
            f"the {get_template(template).name} template ends turns with a token "
            "this tokenizer does not have: train it with the chat markers "
            "(tokenizer.SPECIAL_TOKENS)"
        )
    template, end = get_template(template), tokenizer.id_to_piece(end_id)
    system, user, assistant = (template.header(role) for role in ROLES)
    close = end if template.close_every_turn else (
        "{% if message['role'] == 'assistant' %}" + end + "{% endif %}"
    )  # fmt: skip
    return (
        "{% for message in messages %}"
        f"{{% if message['role'] == 'system' %}}{system}"
        f"{{% elif message['role'] == 'user' %}}{user}"
        f"{{% else %}}{assistant}{{% endif %}}"
        "{{ message['content'] }}" + close + template.footer + "{% endfor %}"
        f"{{% if add_generation_prompt %}}{assistant}{{% endif %}}"
    )


def stop_token_ids(tokenizer: Tokenizer, template: str = "chatml") -> list[int]:
    """What ends a generation: the end-of-text token and the template's end of turn."""
    end_of_turn = end_of_turn_id(tokenizer, template)
    return sorted({tokenizer.eos_id} | ({end_of_turn} if end_of_turn else set()))


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """The ids that config.json and generation_config.json name."""
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
    }


def tokenizer_config(tokenizer: Tokenizer, template: str, context: int) -> dict:
    """tokenizer_config.json: the fast tokenizer's class, the special tokens, no <s>
    added (as in training), and the chat template."""
    piece = tokenizer.id_to_piece
    chat = end_of_turn_id(tokenizer, template) is not None
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": piece(tokenizer.bos_id),
        "eos_token": piece(tokenizer.eos_id),
        "unk_token": piece(tokenizer.unk_id),
        "pad_token": piece(tokenizer.pad_id),
        "additional_special_tokens": [
            p for p in SPECIAL_TOKENS if p in tokenizer.special_token_ids()
        ],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        **({"chat_template": chat_template_jinja(template, tokenizer)} if chat else {}),
    }


def save_tokenizer_files(
    tokenizer: Tokenizer, folder: str | Path, template: str, context: int
) -> None:
    """Write tokenizer.json, tokenizer_config.json, generation_config.json and our own
    tokenizer.model (for sentencepiece and llama.cpp's converter) into `folder`."""
    folder = Path(folder)
    atomic_write_bytes(
        folder / "tokenizer.json", fast_tokenizer(tokenizer).to_str().encode()
    )
    files = {
        "tokenizer_config.json": tokenizer_config(tokenizer, template, context),
        "generation_config.json": {
            **special_ids(tokenizer),
            "eos_token_id": stop_token_ids(tokenizer, template),
        },
    }
    for name, values in files.items():
        atomic_write_bytes(folder / name, json.dumps(values, indent=2).encode())
    tokenizer.save(folder / "tokenizer.model")


def model_card(
    name: str, description: str, facts: dict[str, object], template: str = "chatml"
) -> str:
    """README.md for the folder: what the model is, the numbers that describe it, and
    how to run it with transformers."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in facts.items())
    return f"""---
library_name: transformers
pipeline_tag: text-generation
---

# {name}

{description}

| | |
|---|---|
{rows}

Trained with LLM Foundry (`foundry_core`). Chat format: {template}, answers end with
the end-of-turn token, on which `generate` stops (generation_config.json).

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
chat = [{{"role": "user", "content": "..."}}]
ids = tokenizer.apply_chat_template(
    chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
)["input_ids"]
answer = model.generate(ids, max_new_tokens=64)[0, ids.shape[1] :]
print(tokenizer.decode(answer, skip_special_tokens=True))
```
"""
