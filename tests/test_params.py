import pytest
import torch
from torch import nn

import utils

GPT2 = {  # name: (n_layer, d_model, n_head)
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
    "large": (36, 1280, 20),
    "xl": (48, 1600, 25),
}
# Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1: (n_params, n_layers, d_model).
GPT3_TABLE_2_1 = [
    (125e6, 12, 768), (350e6, 24, 1024), (760e6, 24, 1536), (1.3e9, 24, 2048),
    (2.7e9, 32, 2560), (6.7e9, 32, 4096), (13e9, 40, 5140), (175e9, 96, 12288),
]


def test_count_parameters_of_a_linear_layer():
    assert utils.count_parameters(nn.Linear(10, 5)) == 55


def test_count_parameters_counts_tied_weights_once_and_filters_trainable():
    emb = nn.Embedding(100, 8)
    head = nn.Linear(8, 100, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head, "frozen": nn.Linear(8, 2)})
    model["frozen"].requires_grad_(False)
    assert utils.count_parameters(model) == 800 + 18
    assert utils.count_parameters(model, trainable_only=True) == 800


def test_count_parameters_works_on_meta_device():
    with torch.device("meta"):
        model = nn.Linear(10_000, 10_000)
    assert utils.count_parameters(model) == 10_000 * 10_000 + 10_000


@pytest.mark.tensorflow
def test_count_parameters_of_keras_model(tf):
    keras = tf.keras
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    model.layers[0].trainable = False
    assert utils.count_parameters(model) == 67
    assert utils.count_parameters(model, trainable_only=True) == 12


@pytest.mark.tensorflow
def test_count_parameters_of_unbuilt_keras_model_explains(tf):
    model = tf.keras.Sequential([tf.keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="not built"):
        utils.count_parameters(model)


def test_count_parameters_rejects_other_objects():
    with pytest.raises(TypeError, match="torch.nn.Module or a Keras model"):
        utils.count_parameters([1, 2, 3])


def test_transformer_param_count_gpt2_small_is_exact():
    assert utils.transformer_param_count(12, 768, 50257, 1024) == 124_439_808


@pytest.mark.parametrize("name", list(GPT2))
def test_transformer_param_count_equals_hugging_face_gpt2_on_meta(name):
    transformers = pytest.importorskip("transformers")
    n_layer, d_model, n_head = GPT2[name]
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=d_model, n_head=n_head)
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(config)
    assert utils.count_parameters(model) == utils.transformer_param_count(n_layer, d_model, 50257, 1024)


def test_transformer_param_count_matches_a_hand_built_block_without_bias_and_untied():
    d, d_ff, vocab, n_ctx = 16, 40, 50, 8

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
            self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.up, self.down = nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)

    model = nn.ModuleList([nn.Embedding(vocab, d), nn.Embedding(n_ctx, d), Block(), Block(),
                           nn.LayerNorm(d, bias=False), nn.Linear(d, vocab, bias=False)])
    expected = utils.transformer_param_count(2, d, vocab, n_ctx, d_ff=d_ff, tied_embeddings=False, bias=False)
    assert utils.count_parameters(model) == expected


@pytest.mark.parametrize("published, n_layer, d_model", GPT3_TABLE_2_1)
def test_transformer_param_count_reproduces_gpt3_table_within_3_percent(published, n_layer, d_model):
    count = utils.transformer_param_count(n_layer, d_model, 50257, 2048)
    assert abs(count - published) / published < 0.03


@pytest.mark.parametrize("kwargs, error", [
    (dict(n_layer=0, d_model=8, vocab_size=10, n_ctx=4), ValueError),
    (dict(n_layer=2, d_model=-8, vocab_size=10, n_ctx=4), ValueError),
    (dict(n_layer=2.0, d_model=8, vocab_size=10, n_ctx=4), TypeError),
    (dict(n_layer=2, d_model=8, vocab_size=10, n_ctx=4, d_ff=0), ValueError),
])
def test_transformer_param_count_rejects_bad_sizes(kwargs, error):
    with pytest.raises(error):
        utils.transformer_param_count(**kwargs)
