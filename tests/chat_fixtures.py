"""A tokenizer and a tiny chat model that has learned three chats by heart, shared by
the export tests (tests/test_export_hf.py, tests/test_llama_cpp.py) through
conftest.py."""

import pytest
import torch

from foundry_core import ModelConfig
from foundry_core.align import encode_chat
from foundry_core.model import Transformer
from foundry_core.tokenizer import train_tokenizer

TEXT = (
    "Who's there? Stand and unfold yourself.   Long live the king!\n"
    "\tA little more than kin, and less than kind.  1603 and 42 \n"
    "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？\n"
)
# text the tokenizer never saw: unknown characters take the byte fallback
PROBES = [
    "Hello world",
    "  two  spaces,\ta tab\n\nand newlines  ",
    "To be, or not to be: that is the question.",
    "温故而知新，可以为师矣。",
    "emoji 🤖🎉 and ünïcödé",
    "digits 1234567890",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
]
CHATS = [
    [
        {"role": "user", "content": "Who's there?"},
        {"role": "assistant", "content": "Nay"},
    ],
    [
        {"role": "user", "content": "Long live"},
        {"role": "assistant", "content": "the king"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "学而"},
        {"role": "assistant", "content": "时习之"},
    ],
]


@pytest.fixture(scope="session")
def chat_tokenizer(tmp_path_factory):
    return train_tokenizer([TEXT * 4], 360, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def chat_model(chat_tokenizer):
    tokenizer = chat_tokenizer
    """A tiny model that has learned three chats by heart, end-of-turn included, so
    that generation has a real place to stop."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=128,
        max_seq_len=64,
    )
    model = Transformer(config)
    rows = [encode_chat(tokenizer, chat)[0] for chat in CHATS]
    width = max(map(len, rows))
    batch = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
