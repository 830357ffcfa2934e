"""The data pipeline: named sources, cleaning, deduplication, and token datasets."""

from .clean import CleanConfig, CleanReport, clean_documents, normalize_text
from .dataset import TokenWindows, make_loader, read_tokens, split_documents, token_dtype, write_tokens
from .sources import CORPORA, Document, load_corpus

__all__ = [
    "CORPORA",
    "CleanConfig",
    "CleanReport",
    "Document",
    "TokenWindows",
    "clean_documents",
    "load_corpus",
    "make_loader",
    "normalize_text",
    "read_tokens",
    "split_documents",
    "token_dtype",
    "write_tokens",
]
