"""The data pipeline: named sources, cleaning, deduplication, and token datasets."""

from .clean import CleanConfig, CleanReport, clean_documents, normalize_text
from .dataset import (
    TokenWindows,
    make_loader,
    read_tokens,
    split_documents,
    token_dtype,
    write_tokens,
)
from .dedup import NearDuplicates, exact_dedup, minhash_dedup, near_duplicates
from .sources import CORPORA, Document, corpus_samples, load_corpus

__all__ = [
    "CORPORA",
    "CleanConfig",
    "CleanReport",
    "Document",
    "NearDuplicates",
    "TokenWindows",
    "clean_documents",
    "corpus_samples",
    "exact_dedup",
    "load_corpus",
    "make_loader",
    "minhash_dedup",
    "near_duplicates",
    "normalize_text",
    "read_tokens",
    "split_documents",
    "token_dtype",
    "write_tokens",
]
