"""Find the best-matching documents (FAQ entries, passages) for a query: BM25, embeddings, or both.

- ``"bm25"``: Okapi BM25 (Robertson & Zaragoza, 2009, Foundations and Trends in IR 3(4)) from the
  ``rank-bm25`` package, on lower-cased word tokens, with a non-negative IDF (see below).
- ``"embedding"``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings
  (:func:`utils.text.embed_texts`); the documents are embedded once, when the retriever is built.
- ``"hybrid"``: reciprocal-rank fusion of the two rankings (Cormack, Clarke & Büttcher, 2009,
  "Reciprocal rank fusion outperforms Condorcet and individual rank learning methods", SIGIR '09,
  pp. 758-759): ``score(d) = sum over rankings of 1 / (rrf_k + rank(d))`` with ranks from 1 and
  ``rrf_k = 60`` as in the paper. Only documents that share at least one word with the query are in
  the BM25 ranking; every document is in the embedding ranking.

**Why not plain ``rank_bm25.BM25Okapi``.** Its IDF is ``ln((N - n + 0.5) / (n + 0.5))`` for a word in
``n`` of ``N`` documents: exactly 0 when ``n = N / 2`` and negative above, where it is replaced by
``epsilon`` times the *average* IDF, which is itself zero or negative on a small corpus. So on a
handful of documents a query that matches a document can score 0 or below (rank-bm25 issues #29, #39,
#43). Here the IDF is ``ln(1 + (N - n + 0.5) / (n + 0.5))`` (the variant Lucene uses), which is
positive for every word; the term-frequency part (``k1 = 1.5``, ``b = 0.75``) is rank-bm25's.

Example:
    >>> faq = ["How do I track my order?", "How long does a refund take?", "Do you ship abroad?"]
    >>> Retriever(faq, method="bm25").search("refund", k=1)[0][0]
    1
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["METHODS", "RRF_K", "Retriever", "tokenize"]

METHODS = ("bm25", "embedding", "hybrid")
RRF_K = 60  # Cormack, Clarke & Büttcher (2009)
_WORD = re.compile(r"[a-z0-9]+")


class _NotText(TypeError, ValueError):
    """Raised for non-string input: a TypeError that ``except ValueError`` also catches."""


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: the words BM25 counts.

    Example:
        >>> tokenize("Where's order #48213?")
        ['where', 's', 'order', '48213']
    """
    if not isinstance(text, str):
        raise _NotText(f"tokenize() takes a string, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def _bm25_class() -> type:
    from rank_bm25 import BM25Okapi  # noqa: PLC0415 - imported on first use

    class _PositiveIdfBM25(BM25Okapi):
        """rank-bm25's Okapi BM25 with IDF ``ln(1 + (N - n + 0.5) / (n + 0.5)) > 0``."""

        def _calc_idf(self, nd: dict[str, int]) -> None:
            n_docs = self.corpus_size
            self.idf = {word: math.log(1.0 + (n_docs - n + 0.5) / (n + 0.5)) for word, n in nd.items()}
            self.average_idf = sum(self.idf.values()) / max(len(self.idf), 1)

    return _PositiveIdfBM25


def _check_query(query: Any) -> str:
    if not isinstance(query, str):
        raise _NotText(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: pass the question to search for, e.g. 'where is my parcel?'")
    return query


class Retriever:
    """Rank ``documents`` for a query by BM25, by embedding similarity, or by both (hybrid).

    Args:
        documents: the texts to search (at least one; each a non-blank string). Results refer to
            them by index.
        method: ``"bm25"``, ``"embedding"`` or ``"hybrid"`` (reciprocal-rank fusion of the two).
        encoder: how to embed texts for ``"embedding"`` / ``"hybrid"``: ``None`` for the course's
            pretrained all-MiniLM-L6-v2 (``utils.text.embed_texts``, cached per text), a
            ``(tokenizer, model)`` pair as returned by ``utils.text.load_pretrained_encoder``
            (not cached), or any function ``list[str] -> array (n, d)``. Rows are L2-normalised here.
        k1, b: BM25's term-frequency saturation and length normalisation (rank-bm25's defaults).
        rrf_k: the constant of reciprocal-rank fusion (60, as in Cormack et al., 2009).

    Document embeddings are computed once, here; a search embeds only the query.

    Raises ValueError for an empty document list, a blank document, an unknown method or bad
    parameters, and a TypeError that is also a ValueError for non-string documents.

    Example:
        >>> faq = ["How do I track my order?", "How long does a refund take?", "Do you ship abroad?"]
        >>> retriever = Retriever(faq, method="hybrid")
        >>> [index for index, score in retriever.search("where is my parcel", k=2)][0]
        0
    """

    def __init__(self, documents: Sequence[str], *, method: str = "hybrid", encoder: Any = None,
                 k1: float = 1.5, b: float = 0.75, rrf_k: float = RRF_K) -> None:
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; pass one of {', '.join(map(repr, METHODS))}.")
        if isinstance(documents, str) or not isinstance(documents, (Sequence, np.ndarray)):
            raise _NotText(f"documents must be a list of strings, got {type(documents).__name__}"
                           + (f"; wrap a single text in a list: [{documents[:30]!r}]" if isinstance(documents, str) else ""))
        docs = list(documents)
        if not docs:
            raise ValueError("documents is empty: pass at least one text to search.")
        for i, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise _NotText(f"documents must all be strings; item {i} is a {type(doc).__name__}.")
            if not doc.strip():
                raise ValueError(f"document {i} is blank: every document needs some text (drop or fill it).")
        for name, value, low in (("k1", k1, 0.0), ("b", b, 0.0), ("rrf_k", rrf_k, 0.0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < low:
                raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be between 0 and 1, got {b!r}")
        self.documents = docs
        self.method = method
        self.rrf_k = float(rrf_k)
        self._embed = self._make_embedder(encoder)
        self._bm25 = None
        self.doc_embeddings: np.ndarray | None = None
        if method in ("bm25", "hybrid"):
            tokens = [tokenize(doc) for doc in docs]
            if not any(tokens):
                raise ValueError("No document contains a letter or digit, so BM25 has nothing to match; "
                                 "use method='embedding'.")
            self._bm25 = _bm25_class()(tokens, k1=float(k1), b=float(b))
        if method in ("embedding", "hybrid"):
            self.doc_embeddings = self._normalised(self._embed(docs), len(docs))

    def __len__(self) -> int:
        return len(self.documents)

    def __repr__(self) -> str:
        return f"Retriever(method={self.method!r}, {len(self.documents)} documents)"

    # ------------------------------------------------------------------ embeddings

    @staticmethod
    def _make_embedder(encoder: Any) -> Callable[[list[str]], np.ndarray]:
        if encoder is None or isinstance(encoder, tuple):
            def embed(texts: list[str]) -> np.ndarray:
                from .text import embed_texts  # noqa: PLC0415 - transformers loads on first use

                return embed_texts(texts, encoder=encoder)
            return embed
        if callable(encoder):
            return encoder
        raise ValueError("encoder must be None (the course's MiniLM), a (tokenizer, model) pair from "
                         f"utils.text.load_pretrained_encoder(), or a function texts -> array; got {type(encoder).__name__}")

    @staticmethod
    def _normalised(vectors: Any, n: int) -> np.ndarray:
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != n:
            raise ValueError(f"the encoder must return an array of shape ({n}, d), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("the encoder returned NaN or infinite values")
        return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)

    def encode(self, query: str) -> np.ndarray:
        """The query's unit-length embedding, shape ``(d,)`` (pass it to :meth:`search` to time
        encoding and searching separately).

        Example:
            >>> Retriever(["a", "b"], method="embedding").encode("hello").shape
            (384,)
        """
        query = _check_query(query)
        if self.doc_embeddings is None:
            raise ValueError("a 'bm25' retriever has no embeddings; build it with method='embedding' or 'hybrid'.")
        vector = self._normalised(self._embed([query]), 1)[0]
        if vector.shape != self.doc_embeddings.shape[1:]:
            raise ValueError(f"query embedding has {vector.shape[0]} dimensions, documents {self.doc_embeddings.shape[1]}")
        return vector

    # ------------------------------------------------------------------ scores

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (0 where no word is shared), shape ``(n,)``."""
        query = _check_query(query)
        if self._bm25 is None:
            raise ValueError("an 'embedding' retriever has no BM25 index; build it with method='bm25' or 'hybrid'.")
        return np.asarray(self._bm25.get_scores(tokenize(query)), dtype=np.float64)

    def embedding_scores(self, query: str, *, query_embedding: np.ndarray | None = None) -> np.ndarray:
        """Cosine similarity of every document with ``query``, shape ``(n,)``."""
        vector = self.encode(query) if query_embedding is None else self._check_vector(query_embedding)
        return (self.doc_embeddings @ vector).astype(np.float64)

    def _check_vector(self, vector: Any) -> np.ndarray:
        if self.doc_embeddings is None:
            raise ValueError("query_embedding given, but a 'bm25' retriever uses no embeddings.")
        return self._normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1), 1)[0]

    def scores(self, query: str, *, query_embedding: np.ndarray | None = None) -> np.ndarray:
        """This retriever's score for every document (BM25, cosine, or RRF), shape ``(n,)``."""
        if self.method == "bm25":
            return self.bm25_scores(query)
        cosine = self.embedding_scores(query, query_embedding=query_embedding)
        if self.method == "embedding":
            return cosine
        fused = np.zeros(len(self.documents))
        bm25 = self.bm25_scores(query)
        matched = np.flatnonzero(bm25 > 0)
        for ranking in (matched[np.argsort(-bm25[matched], kind="stable")], np.argsort(-cosine, kind="stable")):
            fused[ranking] += 1.0 / (self.rrf_k + np.arange(1, len(ranking) + 1))
        return fused

    def search(self, query: str, k: int = 5, *, query_embedding: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``k`` best documents as ``(index, score)``, best first (ties: lower index first).

        ``k`` larger than the number of documents returns them all. ``query_embedding`` (from
        :meth:`encode`) skips embedding the query again.

        Example:
            >>> Retriever(["refund policy", "shipping times"], method="bm25").search("refund?", k=1)
            [(0, 0.6...)]
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1 (how many documents to return), got {k}")
        scores = self.scores(query, query_embedding=query_embedding)
        order = np.argsort(-scores, kind="stable")[: int(k)]
        return [(int(i), float(scores[i])) for i in order]
