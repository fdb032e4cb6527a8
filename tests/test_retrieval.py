"""utils.retrieval: BM25 (hand-computed), embedding search (brute-force cosine), RRF, bad input."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import utils  # noqa: E402
from utils.retrieval import HYBRID_WEIGHT, METHODS, RRF_K, RRF_WEIGHT, Retriever, fuse, tokenize  # noqa: E402

DOCS = ["refund refund policy", "shipping times", "refund"]


class CountingEncoder:
    """A fake encoder: fixed random vectors per text (not unit length), counting its calls."""

    def __init__(self, dim=8):
        self.dim, self.calls, self.texts = dim, 0, 0

    def __call__(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) * 3 for t in texts])


def bm25_by_hand(query_words, docs, k1=1.5, b=0.75):
    """Okapi BM25 with IDF ln(1 + (N - n + 0.5) / (n + 0.5)), written out independently."""
    tokens = [d.split() for d in docs]
    n_docs, avgdl = len(docs), sum(len(t) for t in tokens) / len(docs)
    scores = []
    for words in tokens:
        total = 0.0
        for q in query_words:
            n = sum(q in t for t in tokens)
            if n == 0:
                continue
            idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
            tf = words.count(q)
            total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(words) / avgdl))
        scores.append(total)
    return np.array(scores)


def test_tokenize_lowercases_and_keeps_letters_and_digits():
    assert tokenize("Where's order #48213?") == ["where", "s", "order", "48213"]


def test_bm25_matches_a_hand_computed_score():
    # "refund" is in 2 of 3 documents: idf = ln(1 + 1.5 / 2.5) = ln 1.6; avgdl = 2.
    # doc 0: tf 2, length 3 -> 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 1.5)) = 5 / 4.0625
    # doc 2: tf 1, length 1 -> 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 0.5)) = 2.5 / 1.9375
    expected = np.array([math.log(1.6) * 5 / 4.0625, 0.0, math.log(1.6) * 2.5 / 1.9375])
    scores = Retriever(DOCS, method="bm25").bm25_scores("Refund?")
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    np.testing.assert_allclose(scores, bm25_by_hand(["refund"], DOCS), rtol=1e-12)
    assert Retriever(DOCS, method="bm25").search("refund", k=2) == [(2, pytest.approx(expected[2])), (0, pytest.approx(expected[0]))]


def test_bm25_scores_a_match_above_zero_where_rank_bm25_okapi_gives_zero():
    from rank_bm25 import BM25Okapi

    docs = ["windy london", "good man"]
    plain = BM25Okapi([d.split() for d in docs]).get_scores(["windy"])
    assert plain[0] == 0.0  # the library's IDF ln((2 - 1 + 0.5) / (1 + 0.5)) = 0 (rank-bm25 issue #43)
    ours = Retriever(docs, method="bm25").bm25_scores("windy")
    assert ours[0] == pytest.approx(math.log(2)) and ours[1] == 0.0  # tf part is exactly 1 here


def test_bm25_word_in_every_document_still_counts_positively():
    docs = ["my order", "my refund", "my account"]
    scores = Retriever(docs, method="bm25").bm25_scores("my refund")
    assert (scores > 0).all() and scores.argmax() == 1
    np.testing.assert_allclose(scores, bm25_by_hand(["my", "refund"], docs), rtol=1e-12)


def test_embedding_search_equals_brute_force_cosine():
    encoder = CountingEncoder()
    docs = [f"document {i}" for i in range(12)]
    retriever = Retriever(docs, method="embedding", encoder=encoder)
    D, q = encoder(docs), encoder(["a query"])[0]
    cosine = D @ q / (np.linalg.norm(D, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(retriever.embedding_scores("a query"), cosine, rtol=1e-5, atol=1e-6)
    result = retriever.search("a query", k=4)
    assert [i for i, _ in result] == list(np.argsort(-cosine)[:4])
    np.testing.assert_allclose([s for _, s in result], np.sort(cosine)[::-1][:4], rtol=1e-5)


def test_document_embeddings_are_computed_once_and_each_search_embeds_only_the_query():
    encoder = CountingEncoder()
    retriever = Retriever(["a", "b", "c"], method="hybrid", encoder=encoder)
    assert (encoder.calls, encoder.texts) == (1, 3)
    for _ in range(3):
        retriever.search("b", k=2)
    assert (encoder.calls, encoder.texts) == (4, 6)
    vector = retriever.encode("b")
    retriever.search("b", k=2, query_embedding=vector)
    assert encoder.calls == 5  # the given embedding is reused


def test_rrf_with_equal_weights_is_reciprocal_rank_fusion_of_bm25_and_embedding_ranks():
    encoder = CountingEncoder()
    docs = ["refund policy", "shipping times", "refund status", "account login"]
    retriever = Retriever(docs, method="rrf", encoder=encoder, weight=0.5)
    query = "refund"
    bm25 = retriever.bm25_scores(query)
    cosine = retriever.embedding_scores(query)
    expected = np.zeros(len(docs))
    matched = [i for i in np.argsort(-bm25, kind="stable") if bm25[i] > 0]  # docs 0 and 2 only
    for rank, i in enumerate(matched, start=1):
        expected[i] += 1 / (RRF_K + rank)
    for rank, i in enumerate(np.argsort(-cosine, kind="stable"), start=1):
        expected[i] += 1 / (RRF_K + rank)
    np.testing.assert_allclose(retriever.scores(query), expected / 2, rtol=1e-12)  # weights 0.5 + 0.5
    assert [i for i, _ in retriever.search(query, k=4)] == list(np.argsort(-expected, kind="stable"))


def test_hybrid_is_the_weighted_sum_of_min_max_normalised_scores():
    docs = ["refund policy", "shipping times", "refund status", "account login"]
    retriever = Retriever(docs, encoder=CountingEncoder())
    assert retriever.method == "hybrid" and retriever.weight == HYBRID_WEIGHT
    bm25, cosine = retriever.bm25_scores("refund"), retriever.embedding_scores("refund")

    def minmax(x):
        return (x - x.min()) / (x.max() - x.min())

    expected = HYBRID_WEIGHT * minmax(cosine) + (1 - HYBRID_WEIGHT) * minmax(bm25)
    np.testing.assert_allclose(retriever.scores("refund"), expected, rtol=1e-12)
    only_embedding = Retriever(docs, encoder=CountingEncoder(), weight=1.0)
    assert [i for i, _ in only_embedding.search("refund", k=4)] == list(np.argsort(-cosine, kind="stable"))


def test_fuse_by_hand_and_its_defaults():
    np.testing.assert_allclose(fuse([2.0, 0.0, 1.0], [0.1, 0.9, 0.5], weight=0.25), [0.75, 0.25, 0.5])
    rrf = fuse([2.0, 0.0, 1.0], [0.1, 0.9, 0.5], method="rrf", rrf_k=0, weight=0.5)
    np.testing.assert_allclose(rrf, [0.5 / 1 + 0.5 / 3, 0.5 / 1, 0.5 / 2 + 0.5 / 2])
    assert fuse([0.0, 0.0], [0.3, 0.3]).tolist() == [0.0, 0.0]  # all equal: nothing to prefer
    assert Retriever(DOCS, method="rrf", encoder=CountingEncoder()).weight == RRF_WEIGHT
    assert set(METHODS) == {"bm25", "embedding", "hybrid", "rrf"}


@pytest.mark.parametrize("kwargs, message", [({"weight": 1.5}, "weight"), ({"weight": "0.5"}, "weight"),
                                             ({"weight": True}, "weight"), ({"method": "sum"}, "method"),
                                             ({"rrf_k": -1}, "rrf_k")])
def test_fuse_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fuse([1.0, 0.0], [0.5, 0.2], **kwargs)


@pytest.mark.parametrize("bm25, cosine", [([1.0, 0.0], [0.5]), ([], []), ([1.0, np.nan], [0.5, 0.2]), ("ab", [1, 2])])
def test_fuse_refuses_bad_scores(bm25, cosine):
    with pytest.raises(ValueError):
        fuse(bm25, cosine)


def test_tokenize_keeps_accented_letters_and_splits_chinese_into_characters_and_bigrams():
    assert tokenize("Café, déjà-vu, Straße") == ["café", "déjà", "vu", "straße"]
    assert tokenize("退货运费") == ["退", "货", "运", "费", "退货", "货运", "运费"]
    assert tokenize("iPhone的退货。") == ["iphone", "的", "退", "货", "的退", "退货"]
    assert tokenize("ＡＢＣ１２") == ["abc12"]  # full-width letters and digits (NFKC)


def test_bm25_finds_a_chinese_faq_entry():
    faq = ["如何退货并获得退款？", "运费是多少？", "怎样修改收货地址？"]
    retriever = Retriever(faq, method="bm25")
    assert retriever.search("我想退货", k=1)[0][0] == 0
    assert retriever.search("改地址", k=1)[0][0] == 2
    assert retriever.bm25_scores("运费多少")[1] > 0


def test_bm25_matches_accented_words_and_not_their_fragments():
    docs = ["Où est mon colis ?", "Remboursement d'un article"]
    assert Retriever(docs, method="bm25").search("où est-il", k=1)[0][0] == 0
    assert Retriever(["résumé writing", "sum of money"], method="bm25").bm25_scores("sum").tolist()[0] == 0.0


def test_minilm_search_matches_brute_force_cosine_of_embed_texts():
    from utils.text import embed_texts

    docs = ["How do I track my order?", "How long does a refund take?", "Do you ship to Canada?"]
    retriever = Retriever(docs, method="embedding")
    query = "where is my parcel"
    cosine = embed_texts(docs) @ embed_texts([query])[0]
    np.testing.assert_allclose(retriever.embedding_scores(query), cosine, atol=1e-5)
    assert retriever.search(query, k=1)[0][0] == 0
    assert Retriever(docs).search("money back", k=1)[0][0] == 1  # hybrid, default method


def test_k_larger_than_the_corpus_returns_every_document_once():
    result = Retriever(DOCS, method="bm25").search("refund", k=10)
    assert sorted(i for i, _ in result) == [0, 1, 2]


def test_utils_exports_retriever():
    assert utils.Retriever is Retriever and "Retriever" in utils.__all__


@pytest.mark.parametrize("documents, message", [([], "empty"), (["ok", "  "], "blank"), (["???"], "no.*word"),
                                                ([":-)", "🙂 !!"], "letter or digit in any script")])
def test_bad_documents_raise_value_error(documents, message):
    with pytest.raises(ValueError, match=message):
        Retriever(documents, method="bm25")


def test_chinese_documents_are_not_called_wordless():
    Retriever(["如何退货？", "运费"], method="bm25")  # the old ASCII tokeniser refused these


@pytest.mark.parametrize("documents", [["fine", 3], "a single string", None])
def test_non_string_documents_raise_an_error_that_is_both_value_and_type_error(documents):
    with pytest.raises(ValueError):
        Retriever(documents, method="bm25")
    with pytest.raises(TypeError):
        Retriever(documents, method="bm25")


def test_unknown_method_raises_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="bm25"):
        Retriever(DOCS, method="tfidf")


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_empty_query_raises_value_error(query):
    with pytest.raises(ValueError, match="empty"):
        Retriever(DOCS, method="bm25").search(query)


@pytest.mark.parametrize("query", ["???", "!!! ...", "🙂", "？！"])
@pytest.mark.parametrize("method", ["bm25", "hybrid"])
def test_query_without_any_word_is_refused_like_an_empty_one(query, method):
    with pytest.raises(ValueError, match="no word"):
        Retriever(DOCS, method=method, encoder=CountingEncoder()).search(query)


def test_query_embedding_given_to_a_bm25_retriever_is_refused():
    retriever = Retriever(DOCS, method="bm25")
    with pytest.raises(ValueError, match="bm25"):
        retriever.search("refund", query_embedding=np.ones(8))


@pytest.mark.parametrize("vector", [np.ones(7), np.ones((2, 8)), np.ones(384), "refund", [np.nan] * 8])
def test_query_embedding_of_the_wrong_size_or_kind_is_refused(vector):
    retriever = Retriever(DOCS, method="embedding", encoder=CountingEncoder(dim=8))
    with pytest.raises(ValueError, match="query_embedding|NaN"):
        retriever.search("refund", query_embedding=vector)
    retriever.search("refund", query_embedding=np.ones((1, 8)))  # a (1, d) row is fine


def test_non_string_query_raises_value_error():
    with pytest.raises(ValueError):
        Retriever(DOCS, method="bm25").search(["refund"])


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_raises_value_error(k):
    with pytest.raises(ValueError, match="k must"):
        Retriever(DOCS, method="bm25").search("refund", k=k)


def test_bad_encoder_output_shape_raises_value_error():
    with pytest.raises(ValueError, match="shape"):
        Retriever(DOCS, method="embedding", encoder=lambda texts: np.ones((1, 4)))
