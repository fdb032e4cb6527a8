"""Find the best-matching documents (FAQ entries, passages) for a query: BM25, embeddings, or both.

- ``"bm25"``: Okapi BM25 (Robertson & Zaragoza, 2009, Foundations and Trends in IR 3(4)) from the
  ``rank-bm25`` package, on lower-cased word tokens, with a non-negative IDF (see below).
- ``"embedding"``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings
  (:func:`utils.text.embed_texts`); the documents are embedded once, when the retriever is built.
- ``"hybrid"`` (the default): a convex combination of the two scores after min-max normalising each
  over the documents, ``weight * cos' + (1 - weight) * bm25'`` (Bruch, Gai & Ingber, 2023, "An Analysis of
  Fusion Functions for Hybrid Retrieval", ACM TOIS 42(1): more accurate and more sample-efficient than RRF).
  ``HYBRID_WEIGHT = 0.7`` was chosen on chapter 12's dev questions (never its test questions); tune it on
  your own dev data (a few dozen labelled questions are enough) with :func:`fuse`.
- ``"rrf"``: weighted reciprocal-rank fusion (Cormack, Clarke & Büttcher, 2009, "Reciprocal rank fusion
  outperforms Condorcet and individual rank learning methods", SIGIR '09, pp. 758-759):
  ``score(d) = weight / (rrf_k + rank_emb(d)) + (1 - weight) / (rrf_k + rank_bm25(d))`` with ranks from 1
  and ``rrf_k = 60`` as in the paper (``weight = 0.5`` is the paper's unweighted RRF, up to a factor 2).
  Only documents that share at least one word with the query are in the BM25 ranking.
  ``RRF_WEIGHT = 0.8`` was chosen on the same dev questions: with equal weights a weak BM25 ranking
  drags good embedding hits down on paraphrased questions.

**Words.** BM25 counts Unicode words (NFKC-normalised, lower-cased): runs of letters and digits in any
script, accents kept ("café"); Chinese, Japanese kana and other CJK text, which has no spaces, counts each
character and each pair of neighbouring characters (character unigrams + bigrams).

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
    >>> Retriever(["如何退货？", "运费是多少？"], method="bm25").search("我想退货", k=1)[0][0]
    0
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["HYBRID_WEIGHT", "METHODS", "RRF_K", "RRF_WEIGHT", "Retriever", "fuse", "tokenize"]

METHODS = ("bm25", "embedding", "hybrid", "rrf")
RRF_K = 60  # Cormack, Clarke & Büttcher (2009)
HYBRID_WEIGHT = 0.7  # embedding weight of "hybrid", chosen on chapter 12's dev questions
RRF_WEIGHT = 0.8  # embedding weight of "rrf", chosen on the same dev questions
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script
# CJK ideographs (+ extension A, compatibility), hiragana, katakana: scripts written without spaces
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


class _NotText(TypeError, ValueError):
    """Raised for non-string input: a TypeError that ``except ValueError`` also catches."""


def tokenize(text: str) -> list[str]:
    """The words BM25 counts: lower-cased runs of letters and digits in any script (accents kept);
    CJK text (no spaces between words) gives each character and each pair of neighbouring characters.

    Example:
        >>> tokenize("Where's order #48213?")
        ['where', 's', 'order', '48213']
        >>> tokenize("Café déjà-vu")
        ['café', 'déjà', 'vu']
        >>> tokenize("退货运费")
        ['退', '货', '运', '费', '退货', '货运', '运费']
    """
    if not isinstance(text, str):
        raise _NotText(f"tokenize() takes a string, got {type(text).__name__}")
    words: list[str] = []
    for run in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        start = 0
        for cjk in _CJK.finditer(run):  # split a run such as "iphone的退货" into "iphone" + CJK characters
            if cjk.start() > start:
                words.append(run[start:cjk.start()])
            chars = cjk.group()
            words.extend(chars)
            words.extend(chars[i:i + 2] for i in range(len(chars) - 1))
            start = cjk.end()
        if start < len(run):
            words.append(run[start:])
    return words


def _minmax(scores: np.ndarray) -> np.ndarray:
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.zeros_like(scores)


def fuse(bm25: Any, cosine: Any, *, method: str = "hybrid", weight: float | None = None,
         rrf_k: float = RRF_K) -> np.ndarray:
    """Fuse one query's BM25 scores and embedding cosines of the same ``n`` documents into one score each.

    ``"hybrid"``: ``weight * minmax(cosine) + (1 - weight) * minmax(bm25)`` (min-max over the documents;
    all-equal scores normalise to 0). ``"rrf"``: ``weight / (rrf_k + rank by cosine) + (1 - weight) /
    (rrf_k + rank by BM25)``, where only documents with a BM25 score > 0 are ranked by BM25.
    ``weight`` is the embedding's weight in [0, 1] (default :data:`HYBRID_WEIGHT` / :data:`RRF_WEIGHT`);
    tune it on dev questions by calling this function for a grid of weights.

    Example:
        >>> fuse([2.0, 0.0, 1.0], [0.1, 0.9, 0.5]).round(3).tolist()  # 0.7 * cos' + 0.3 * bm25'
        [0.3, 0.7, 0.5]
        >>> int(fuse([2.0, 0.0, 1.0], [0.1, 0.9, 0.5], method="rrf").argmax())  # 2nd in both rankings wins
        2
    """
    if method not in ("hybrid", "rrf"):
        raise ValueError(f"fuse() method must be 'hybrid' or 'rrf', got {method!r}")
    weight = _check_weight(weight, method)
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, numbers.Real) or not math.isfinite(rrf_k) or rrf_k < 0:
        raise ValueError(f"rrf_k must be a finite number >= 0, got {rrf_k!r}")
    arrays = []
    for name, values in (("bm25", bm25), ("cosine", cosine)):
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be a 1-D array of numbers, one per document") from error
        if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
            raise ValueError(f"{name} must be a non-empty 1-D array of finite numbers, got shape {array.shape}")
        arrays.append(array)
    bm25, cosine = arrays
    if bm25.shape != cosine.shape:
        raise ValueError(f"bm25 and cosine must score the same documents: shapes {bm25.shape} and {cosine.shape}")
    if method == "hybrid":
        return weight * _minmax(cosine) + (1.0 - weight) * _minmax(bm25)
    fused = np.zeros(len(bm25))
    matched = np.flatnonzero(bm25 > 0)
    fused[matched[np.argsort(-bm25[matched], kind="stable")]] += (1.0 - weight) / (rrf_k + np.arange(1, len(matched) + 1))
    fused[np.argsort(-cosine, kind="stable")] += weight / (rrf_k + np.arange(1, len(bm25) + 1))
    return fused


def _check_weight(weight: Any, method: str) -> float:
    if weight is None:
        return HYBRID_WEIGHT if method == "hybrid" else RRF_WEIGHT
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"weight (the embedding's share, 0 to 1) must be a number in [0, 1], got {weight!r}")
    return float(weight)


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
    if not tokenize(query):
        raise ValueError(f"query {query[:40]!r} contains no word (no letter or digit in any script), like an "
                         "empty query: pass the question to search for, e.g. 'where is my parcel?'")
    return query


class Retriever:
    """Rank ``documents`` for a query by BM25, by embedding similarity, or by both fused.

    Args:
        documents: the texts to search (at least one; each a non-blank string). Results refer to
            them by index.
        method: ``"bm25"``, ``"embedding"``, ``"hybrid"`` (convex combination of the normalised
            scores, the default) or ``"rrf"`` (weighted reciprocal-rank fusion); see :func:`fuse`.
        encoder: how to embed texts for every method but ``"bm25"``: ``None`` for the course's
            pretrained all-MiniLM-L6-v2 (``utils.text.embed_texts``, cached per text), a
            ``(tokenizer, model)`` pair as returned by ``utils.text.load_pretrained_encoder``
            (not cached), or any function ``list[str] -> array (n, d)``. Rows are L2-normalised here.
        k1, b: BM25's term-frequency saturation and length normalisation (rank-bm25's defaults).
        rrf_k: the constant of reciprocal-rank fusion (60, as in Cormack et al., 2009).
        weight: the embedding's weight in ``"hybrid"`` / ``"rrf"`` (0 to 1); ``None`` for the defaults
            :data:`HYBRID_WEIGHT` / :data:`RRF_WEIGHT`, chosen on chapter 12's dev questions.

    Document embeddings are computed once, here; a search embeds only the query.

    Raises ValueError for an empty document list, a blank document, an unknown method or bad
    parameters, and a TypeError that is also a ValueError for non-string documents.

    Example:
        >>> faq = ["How do I track my order?", "How long does a refund take?", "Do you ship abroad?"]
        >>> retriever = Retriever(faq)  # method="hybrid"
        >>> [index for index, score in retriever.search("where is my parcel", k=2)][0]
        0
    """

    def __init__(self, documents: Sequence[str], *, method: str = "hybrid", encoder: Any = None,
                 k1: float = 1.5, b: float = 0.75, rrf_k: float = RRF_K, weight: float | None = None) -> None:
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
        self.weight = _check_weight(weight, method) if method in ("hybrid", "rrf") else None
        self._embed = self._make_embedder(encoder)
        self._bm25 = None
        self.doc_embeddings: np.ndarray | None = None
        if method != "embedding":
            tokens = [tokenize(doc) for doc in docs]
            if not any(tokens):
                raise ValueError("None of the documents contains a word (a letter or digit in any script: only "
                                 "punctuation, symbols or emoji), so BM25 has nothing to match; pass texts with "
                                 "words, or use method='embedding'.")
            self._bm25 = _bm25_class()(tokens, k1=float(k1), b=float(b))
        if method != "bm25":
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
        if query_embedding is None:
            vector = self.encode(query)  # refuses a 'bm25' retriever
        else:
            _check_query(query)
            vector = self._check_vector(query_embedding)
        return (self.doc_embeddings @ vector).astype(np.float64)

    def _check_vector(self, vector: Any) -> np.ndarray:
        if self.doc_embeddings is None:
            raise ValueError("query_embedding given (or embeddings asked for), but a 'bm25' retriever uses no "
                             "embeddings; drop query_embedding or build it with another method.")
        if isinstance(vector, (str, bytes)):
            raise ValueError("query_embedding must be an array of numbers from encode(), got a string")
        try:
            array = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError("query_embedding must be an array of numbers from encode()") from error
        dim = self.doc_embeddings.shape[1]
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.shape != (dim,):
            raise ValueError(f"query_embedding must have shape ({dim},) like the documents' embeddings, got "
                             f"{array.shape}; pass retriever.encode(query)")
        return self._normalised(array[None], 1)[0]

    def scores(self, query: str, *, query_embedding: np.ndarray | None = None) -> np.ndarray:
        """This retriever's score for every document (BM25, cosine, or fused), shape ``(n,)``."""
        if self.method == "bm25":
            if query_embedding is not None:
                self._check_vector(query_embedding)  # raises: BM25 uses no embedding
            return self.bm25_scores(query)
        cosine = self.embedding_scores(query, query_embedding=query_embedding)
        if self.method == "embedding":
            return cosine
        return fuse(self.bm25_scores(query), cosine, method=self.method, weight=self.weight, rrf_k=self.rrf_k)

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
