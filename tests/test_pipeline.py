"""The chapter hand-off: stages build once and are reused.

A changed setting never reuses an artifact.
"""

import json
from dataclasses import replace

import pytest

from foundry_core import PRESETS
from foundry_core.data import read_tokens
from foundry_core.data.stream import TINYSTORIES
from foundry_core.pipeline import (
    MAX_PASSES,
    Corpus,
    TokenFiles,
    data_budget,
    ensure,
    stage_summary,
)


@pytest.fixture()
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_ARTIFACTS", str(tmp_path))
    return tmp_path


def test_tokens_are_built_once_and_reused(artifacts):
    preset = PRESETS["ci"]
    train_path, val_path = ensure("tokens", preset)
    train, val = read_tokens(train_path), read_tokens(val_path)
    assert len(train) > len(val) > 1000
    tokenizer = ensure("tokenizer", preset)
    assert len(tokenizer) == preset.model.vocab_size
    assert int(train.max()) < preset.model.vocab_size
    eos_count = int((train == tokenizer.eos_id).sum())
    train_docs, val_docs = ensure("corpus", preset)
    assert eos_count == len(train_docs)  # one separator per document
    assert not {d.name for d in train_docs} & {d.name for d in val_docs}
    assert len(train_docs) + len(val_docs) == preset.data.max_documents
    stamp = train_path.stat().st_mtime_ns
    assert (
        ensure("tokens", preset) == (train_path, val_path)
        and train_path.stat().st_mtime_ns == stamp
    )
    assert not [p for p in artifacts.rglob(".*")], "temporary folders left behind"


def test_each_stage_returns_its_own_type_and_says_what_it_holds(artifacts):
    preset = PRESETS["ci"]
    corpus, tokens = ensure("corpus", preset), ensure("tokens", preset)
    assert isinstance(corpus, Corpus) and isinstance(tokens, TokenFiles)
    assert corpus.validation == corpus[1] and tokens.validation == tokens[1]
    assert stage_summary("corpus", preset, corpus)["train documents"] == len(
        corpus.train
    )
    summary = stage_summary("tokens", preset, tokens)
    assert summary["validation tokens"] == len(read_tokens(tokens.validation))
    vocabulary = stage_summary("tokenizer", preset, ensure("tokenizer", preset))
    assert vocabulary["vocabulary"] == preset.model.vocab_size


def test_a_changed_vocabulary_builds_a_new_tokenizer_on_the_same_corpus(artifacts):
    preset = PRESETS["ci"]
    other = replace(preset, model=replace(preset.model, vocab_size=384))
    first, second = ensure("tokenizer", preset), ensure("tokenizer", other)
    assert (len(first), len(second)) == (512, 384)
    assert len(list((artifacts / "ci").glob("corpus-*"))) == 1
    assert len(list((artifacts / "ci").glob("tokenizer-*"))) == 2


def test_unknown_stage_is_a_clear_error(artifacts):
    with pytest.raises(
        ValueError,
        match="unknown stage 'model': "
        "choose one of corpus, tokenizer, tokens, pretrained",
    ):
        ensure("model", PRESETS["ci"])


def test_data_budget_measures_the_corpus_in_the_presets_own_token_file(artifacts):
    preset = PRESETS["ci"]
    budget = data_budget(preset)
    corpus = len(read_tokens(ensure("tokens", preset).train))
    assert budget.corpus_tokens == corpus
    assert budget.trained_tokens == preset.train.total_tokens
    assert budget.passes == pytest.approx(preset.train.total_tokens / corpus)
    assert budget.tokens_per_param == pytest.approx(
        preset.train.total_tokens / preset.model.num_params()
    )
    assert not budget.repeats_too_often
    # ten times the steps reads the same corpus ten times as often
    longer = replace(
        preset, train=replace(preset.train, max_steps=10 * preset.train.max_steps)
    )
    assert data_budget(longer, corpus).passes == pytest.approx(10 * budget.passes)
    assert data_budget(longer, corpus).repeats_too_often == (
        10 * budget.passes > MAX_PASSES
    )
    assert "passes over shakespeare" in str(budget)


@pytest.fixture()
def large_cache(tmp_path, monkeypatch):
    """A cache with the offline archives (linked) and no large corpus, the resolved
    large corpora forgotten."""
    from foundry_core.data import sources, stream

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sources").symlink_to(sources.cache_dir())
    monkeypatch.setenv("FOUNDRY_CACHE", str(cache))
    monkeypatch.setattr(stream, "_resolved", {})
    return cache / stream.TINYSTORIES.name


def with_tinystories(preset):
    return replace(preset, data=replace(preset.data, large_corpus="tinystories"))


def test_offline_a_large_corpus_falls_back_to_the_course_corpus_in_one_line(
    artifacts, large_cache, capsys
):
    plain, preset = PRESETS["ci"], with_tinystories(PRESETS["ci"])
    assert ensure("tokens", preset) == ensure("tokens", plain)  # the same artifact
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinystories cannot be had")
    assert "FOUNDRY_OFFLINE" in lines[0]


def test_a_cached_large_corpus_joins_pretraining_after_the_course_corpus(
    artifacts, large_cache
):
    story = "Once upon a time a {} named Tom{} found a red ball in the big green park. "
    stories = [story.format("cat", i) * 3 for i in range(60)]
    large_cache.mkdir()
    files = (TINYSTORIES.train.path, TINYSTORIES.valid.path)
    (large_cache / files[0]).write_text("<|endoftext|>\n".join(stories[:50]))
    # the validation file repeats one training story: it is dropped from validation
    (large_cache / files[1]).write_text("<|endoftext|>\n".join(stories[49:]))
    plain, preset = PRESETS["ci"], with_tinystories(PRESETS["ci"])
    train_docs, val_docs = ensure("corpus", preset)
    tokens = ensure("tokens", preset)
    assert tokens != ensure("tokens", plain)
    meta = [json.loads(p.with_suffix(".json").read_text()) for p in tokens]
    assert [m["documents"] for m in meta] == [len(train_docs) + 50, len(val_docs) + 10]
    tokenizer = ensure("tokenizer", preset)
    train = read_tokens(tokens.train)
    course = read_tokens(ensure("tokens", plain).train)
    assert len(train) > len(course)
    assert "Tom49" in tokenizer.decode(train[-40:].tolist())  # stories come last
    budget = data_budget(preset)
    assert budget.passes < data_budget(plain).passes
    assert "passes over shakespeare + tinystories" in str(budget)
    assert not list(artifacts.rglob(".*.work")), "the work folder was left behind"


def test_an_interrupted_large_corpus_build_resumes_after_its_finished_split(
    artifacts, large_cache, monkeypatch
):
    from foundry_core.pipeline import data_stages

    story = "Once upon a time a dog named Rex{} dug a hole under the old apple tree. "
    large_cache.mkdir()
    for path, first, last in (
        (TINYSTORIES.train.path, 0, 40),
        (TINYSTORIES.valid.path, 39, 50),
    ):
        texts = [story.format(i) * 3 for i in range(first, last)]
        (large_cache / path).write_text("<|endoftext|>\n".join(texts))
    preset = with_tinystories(PRESETS["ci"])
    real, calls = data_stages.tokenize_stream, []

    def stop_at_validation(texts, model, out, dedup, **kwargs):
        calls.append(out.name)
        if out.name == "val.bin" and calls.count("val.bin") == 1:
            raise KeyboardInterrupt  # the reader stopped the build
        return real(texts, model, out, dedup, **kwargs)

    monkeypatch.setattr(data_stages, "tokenize_stream", stop_at_validation)
    with pytest.raises(KeyboardInterrupt):
        ensure("tokens", preset)
    resumed = ensure("tokens", preset)
    assert calls == ["train.bin", "val.bin", "val.bin"]  # train was not redone
    monkeypatch.setattr(data_stages, "tokenize_stream", real)
    fresh_root = artifacts / "fresh"
    monkeypatch.setenv("FOUNDRY_ARTIFACTS", str(fresh_root))
    fresh = ensure("tokens", preset)
    for a, b in zip(resumed, fresh):
        assert read_tokens(a).tolist() == read_tokens(b).tolist()
    # the validation story that repeats a training one was dropped after the restart too
    meta = json.loads(resumed[1].with_suffix(".json").read_text())
    assert meta["documents"] == len(ensure("corpus", preset)[1]) + 10


def test_the_distilled_draft_is_keyed_by_both_models_and_the_seed(artifacts):
    from foundry_core.pipeline import stage_dir

    preset = PRESETS["ci"]
    folder = stage_dir("distilled-draft", preset)
    assert folder.parent == stage_dir("pretrained", preset).parent
    longer = replace(preset, train=replace(preset.train, max_steps=300))
    reseeded = replace(preset, train=replace(preset.train, seed=7))
    wider = replace(preset, model=replace(preset.model, d_model=128))
    others = {stage_dir("distilled-draft", p) for p in (longer, reseeded, wider)}
    assert folder not in others and len(others) == 3
