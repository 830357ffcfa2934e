"""Large corpora, offline: the download resumes and checks its SHA-256 (against a local
HTTP server), documents stream in blocks, and tokenization in shards resumes after an
interruption and matches encoding each document directly."""

import hashlib
import http.server
import io
import json
import threading

import numpy as np
import pytest

from foundry_core.data import load_corpus, read_tokens
from foundry_core.data import stream as stream_module
from foundry_core.data.stream import (
    TINYSTORIES,
    Dedup,
    download,
    hub_sha256,
    stream_documents,
    tokenize_stream,
)
from foundry_core.tokenizer import Tokenizer, train_tokenizer

STORY = (
    "Once upon a time there was a little {animal} called {name}. Every morning "
    "{name} walked to the river and looked at the fish. One day the fish said hello, "
    "and {name} was so surprised that {name} sat down on the grass and laughed. "
    "After that they met every day, and they were friends for a long, long time."
)
ANIMALS = ["cat", "dog", "bird", "fox", "frog", "duck", "bear"]


def stories(n: int) -> list[str]:
    return [
        STORY.format(animal=ANIMALS[i % len(ANIMALS)], name=f"Pip{i}") for i in range(n)
    ]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, honouring `Range: bytes=N-` unless told to ignore it."""

    payload = b""
    honour_range = True

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        start = 0
        asked = self.headers.get("Range", "")
        if self.honour_range and asked.startswith("bytes="):
            start = int(asked[len("bytes=") :].split("-")[0])
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    handler = type("Handler", (RangeHandler,), {})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_port}/file.txt"
    httpd.shutdown()


PAYLOAD = "<|endoftext|>".join(stories(50)).encode()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_a_partial_file_and_checks_its_sha256(
    server, tmp_path, honour_range
):
    handler, url = server
    handler.payload, handler.honour_range = PAYLOAD, honour_range
    dest = tmp_path / "corpus.txt"
    (tmp_path / "corpus.txt.part").write_bytes(PAYLOAD[:1000])  # an interrupted run
    assert download(url, dest, SHA, progress=False).read_bytes() == PAYLOAD
    assert not (tmp_path / "corpus.txt.part").exists()


def test_a_download_with_the_wrong_sha256_is_deleted_not_kept(server, tmp_path):
    handler, url = server
    handler.payload = PAYLOAD
    with pytest.raises(ValueError, match="expected 0+.*fetch it again"):
        download(url, tmp_path / "corpus.txt", "0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_host_is_a_clear_error(tmp_path):
    with pytest.raises(ConnectionError, match="could not download.*offline corpus"):
        download("http://127.0.0.1:9/x.txt", tmp_path / "x.txt", None, progress=False)


def test_the_hub_listing_gives_the_sha256(monkeypatch):
    listing = [
        {"type": "file", "path": ".gitattributes", "size": 10},
        {"type": "file", "path": TINYSTORIES.train.path, "lfs": {"oid": "ab" * 32}},
    ]
    monkeypatch.setattr(
        stream_module.urllib.request,
        "urlopen",
        lambda url, timeout: io.BytesIO(json.dumps(listing).encode()),
    )
    assert hub_sha256(TINYSTORIES.train) == "ab" * 32
    with pytest.raises(FileNotFoundError, match="not a large file"):
        hub_sha256(TINYSTORIES.valid)


@pytest.mark.parametrize("block_chars", [5, 64, 1 << 20])
def test_documents_stream_in_blocks_of_any_size(tmp_path, block_chars):
    path = tmp_path / "corpus.txt"
    texts = stories(9)
    path.write_text("\n<|endoftext|>\n".join(texts) + "\n<|endoftext|>\n")
    got = list(stream_documents(path, "<|endoftext|>", block_chars))
    assert got == texts


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([d.text for d in load_corpus("shakespeare")[:3]], 512, folder)
    return folder / "tokenizer.model"


def test_tokenize_stream_cleans_deduplicates_and_matches_direct_encoding(
    tmp_path, tokenizer_path
):
    tokenizer = Tokenizer.load(tokenizer_path)
    texts = stories(10)
    docs = texts + [texts[3], texts[5].upper(), "too short"]
    result = tokenize_stream(
        iter(docs),
        tokenizer_path,
        tmp_path / "train.bin",
        Dedup(set()),
        shard_documents=3,
        workers=2,
        progress=False,
    )
    expected = [
        i for t in texts for i in (*tokenizer.encode(t + "\n"), tokenizer.eos_id)
    ]
    assert read_tokens(result.tokens).tolist() == expected
    assert (result.documents, result.duplicates) == (10, 2)  # case does not hide one
    assert result.clean.docs_removed["too short"] == 1
    assert result.token_count == len(expected)
    assert not (tmp_path / "train.bin.shards").exists()


def test_validation_documents_seen_in_training_are_dropped(tmp_path, tokenizer_path):
    texts = stories(8)
    dedup = Dedup(set())
    tokenize_stream(
        iter(texts[:6]), tokenizer_path, tmp_path / "train.bin", dedup, progress=False
    )
    val = tokenize_stream(
        iter(texts[4:]), tokenizer_path, tmp_path / "val.bin", dedup, progress=False
    )
    assert (val.documents, dedup.dropped) == (2, 2)


def test_an_interrupted_tokenization_resumes_at_the_next_shard(
    tmp_path, tokenizer_path, monkeypatch
):
    texts = stories(12)

    def interrupted():
        yield from texts[:7]
        raise KeyboardInterrupt  # the reader stopped the run

    out = tmp_path / "train.bin"
    with pytest.raises(KeyboardInterrupt):
        tokenize_stream(
            interrupted(), tokenizer_path, out, Dedup(set()), 3, 1, progress=False
        )
    done = sorted(p.name for p in (tmp_path / "train.bin.shards").iterdir())
    assert done and not out.exists()
    written = []
    real = stream_module._write_shard
    monkeypatch.setattr(
        stream_module,
        "_write_shard",
        lambda path, future, bar: (written.append(path.name), real(path, future, bar)),
    )
    resumed = tokenize_stream(
        iter(texts), tokenizer_path, out, Dedup(set()), 3, 1, progress=False
    )
    assert not set(written) & set(done)  # the shards on disk were not encoded again
    fresh = tokenize_stream(
        iter(texts), tokenizer_path, tmp_path / "fresh.bin", Dedup(set()), 3, 1, False
    )
    assert np.array_equal(read_tokens(resumed.tokens), read_tokens(fresh.tokens))


def test_what_deduplication_has_seen_survives_a_restart(tmp_path):
    dedup = Dedup(set())
    assert dedup.fresh(stories(3)) == stories(3)
    dedup.save(tmp_path / "seen.npy")
    again = Dedup.load(tmp_path / "seen.npy")
    assert again.seen == dedup.seen
    assert again.fresh(stories(4)) == stories(4)[3:]
