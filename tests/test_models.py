"""utils.models: TinyGPT is a causal, weight-tied GPT-2-style decoder that trains."""

import math

import numpy as np

import pytest
import torch

import utils
from utils.models import GPTConfig, TinyGPT

V, T = 37, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: a second thread only adds synchronisation, and on a busy
    # machine OpenMP's waiting threads can make each step 10-40x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(vocab_size=V, n_layer=2, n_head=4, d_model=32, block_size=T)
    config.update(overrides)
    return TinyGPT(GPTConfig(**config))


def tokens(*shape, seed=1):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def set_sdpa(model, enabled):
    for module in model.modules():
        if hasattr(module, "use_sdpa"):
            module.use_sdpa = enabled


def test_forward_returns_logits_and_no_loss_without_targets():
    model = make_model()
    logits, loss = model(tokens(3, T))
    assert logits.shape == (3, T, V)
    assert loss is None


def test_loss_equals_cross_entropy_over_all_positions():
    model = make_model()
    idx, targets = tokens(3, T), tokens(3, T, seed=2)
    logits, loss = model(idx, targets)
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    torch.testing.assert_close(loss, reference)


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "manual"])
def test_logits_at_position_t_never_depend_on_later_tokens(use_sdpa):
    model = make_model().eval()
    set_sdpa(model, use_sdpa)
    idx = tokens(2, T)
    for t in (0, 5, T - 2):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.arange(T - t - 1)) % V  # every later token differs
        before, _ = model(idx)
        after, _ = model(changed)
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(after[:, t + 1:], before[:, t + 1:], atol=1e-4)  # later positions do change


def test_output_head_is_tied_to_the_token_embedding():
    model = make_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_equals_transformer_param_count(bias):
    model = make_model(n_layer=3, d_model=48, n_head=6, bias=bias)
    expected = utils.transformer_param_count(3, 48, V, T, bias=bias)
    assert utils.count_parameters(model) == expected == model.num_parameters()
    assert model.num_parameters(non_embedding=True) == expected - (V + T) * 48


def test_parameter_count_on_the_meta_device_matches_gpt2_small():
    with torch.device("meta"):
        model = TinyGPT(GPTConfig(vocab_size=50257, n_layer=12, n_head=12, d_model=768, block_size=1024))
    assert utils.count_parameters(model) == utils.transformer_param_count(12, 768, 50257, 1024) == 124439808


def test_fused_attention_equals_the_manual_masked_softmax():
    model = make_model().eval()
    idx = tokens(4, T)
    fused, _ = model(idx)
    set_sdpa(model, False)
    manual, _ = model(idx)
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=0)


def test_loss_at_init_is_close_to_log_vocab_size():
    # With N(0, 0.02) weights the logits are small (std ≈ 0.1 at d_model=32) and the softmax q is
    # nearly uniform. For targets drawn uniformly at random the expected loss is
    # ln V + KL(uniform || q), about half the logit variance (≈ 0.01 nats, a little more because
    # the tied head gives each input token a higher logit for itself). 0.05 nats covers that
    # and the sampling noise of the mean over 8·16 positions (≈ 0.01).
    model = make_model()
    _, loss = model(tokens(8, T), tokens(8, T, seed=3))
    assert abs(loss.item() - math.log(V)) < 0.05


def test_generate_appends_the_requested_number_of_tokens_within_the_vocabulary():
    model = make_model()
    out = model.generate(tokens(2, 5), max_new_tokens=30, temperature=0.7, top_k=5)  # longer than block_size
    assert out.shape == (2, 35)
    assert out.dtype == torch.long and 0 <= out.min() and out.max() < V
    assert torch.equal(out[:, :5], tokens(2, 5))


def test_generate_with_top_k_1_is_greedy_and_deterministic():
    model = make_model()
    prompt = tokens(1, 3)
    a = model.generate(prompt, 10, top_k=1)
    b = model.generate(prompt, 10, top_k=1, temperature=5.0)
    assert torch.equal(a, b)
    # reference: argmax of the model's own next-token logits, one step at a time
    idx = prompt
    for _ in range(10):
        logits, _ = model(idx[:, -T:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(a, idx)


def test_generate_is_reproducible_with_a_seeded_generator_and_restores_train_mode():
    model = make_model(dropout=0.1).train()
    a = model.generate(tokens(1, 2), 20, generator=torch.Generator().manual_seed(7))
    b = model.generate(tokens(1, 2), 20, generator=torch.Generator().manual_seed(7))
    c = model.generate(tokens(1, 2), 20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training


@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(T, dtype=torch.long), ValueError, "shape"),
    (torch.zeros(1, 2, T, dtype=torch.long), ValueError, "shape"),
    (torch.zeros(2, T), TypeError, "torch.long"),
    (torch.zeros(2, T, dtype=torch.int32), TypeError, "torch.long"),
    ([[1, 2, 3]], TypeError, "torch.Tensor"),
    (torch.zeros(2, 0, dtype=torch.long), ValueError, "empty"),
    (torch.zeros(2, T + 1, dtype=torch.long), ValueError, "block_size"),
    (torch.full((2, T), V, dtype=torch.long), ValueError, "outside"),
    (torch.full((2, T), -1, dtype=torch.long), ValueError, "outside"),
])
def test_forward_rejects_bad_input_with_a_clear_error(bad, error, match):
    with pytest.raises(error, match=match):
        make_model()(bad)


def test_forward_rejects_targets_of_another_shape_or_outside_the_vocabulary():
    model = make_model()
    with pytest.raises(ValueError, match="shape of idx"):
        model(tokens(2, T), tokens(2, T - 1))
    with pytest.raises(ValueError, match="outside"):
        model(tokens(2, T), torch.full((2, T), V + 3, dtype=torch.long))


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_generate_rejects_bad_sampling_settings(kwargs, match):
    args = dict(max_new_tokens=3, **kwargs) if "max_new_tokens" not in kwargs else kwargs
    with pytest.raises(ValueError, match=match):
        make_model().generate(tokens(1, 2), **args)


def test_generate_rejects_out_of_vocabulary_prompts():
    with pytest.raises(ValueError, match="outside"):
        make_model().generate(torch.tensor([[V]]), 3)


@pytest.mark.parametrize("overrides, error, match", [
    (dict(d_model=30, n_head=4), ValueError, "divisible"),
    (dict(n_layer=0), ValueError, "positive"),
    (dict(vocab_size=-5), ValueError, "positive"),
    (dict(block_size=8.0), TypeError, "int"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(bias="yes"), TypeError, "bias"),
])
def test_config_validates_its_sizes(overrides, error, match):
    config = dict(vocab_size=V, n_layer=2, n_head=4, d_model=32, block_size=T)
    config.update(overrides)
    with pytest.raises(error, match=match):
        GPTConfig(**config)


def test_tiny_gpt_needs_a_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        TinyGPT({"vocab_size": V})


def test_parameter_groups_decay_matrices_only_and_cover_every_parameter_once():
    model = make_model()
    decay, no_decay = model.parameter_groups(0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="weight_decay"):
        model.parameter_groups(-1)


def test_overfits_a_tiny_batch_through_utils_fit():
    model = make_model()
    X = tokens(4, T, seed=5)
    y = torch.roll(X, -1, dims=1)
    loader = [(X, y)] * 10  # 10 steps per epoch, the same batch every time
    history = utils.fit(model, loader, loss_fn=None, num_epochs=10, device="cpu", progress=False,
                        optimizer=torch.optim.AdamW(model.parameters(), lr=3e-3))
    _, loss = model(X, y)
    assert history["loss"][0] > 2.0
    assert loss.item() < 0.1 * math.log(V)  # from ≈ ln V = 3.6 nats to below 0.36


# --------------------------------------------------------------------------- KV cache (chapter 15)


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "manual"])
def test_cached_logits_equal_the_full_forward_pass_position_by_position(use_sdpa):
    model = make_model().eval()
    set_sdpa(model, use_sdpa)
    idx = tokens(2, T)
    full, _ = model(idx)
    logits, cache = model.forward_with_cache(idx[:, :5])  # prefill 5 positions
    pieces = [logits]
    for t in range(5, T - 3):  # then one token at a time
        logits, cache = model.forward_with_cache(idx[:, t:t + 1], cache)
        pieces.append(logits)
    logits, cache = model.forward_with_cache(idx[:, T - 3:], cache)  # and a chunk of 3 after a cache
    pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prompt_len,new_tokens", [(3, 10), (1, 40), (T, 5), (T + 4, 6)],
                         ids=["fits", "overflows", "prompt-fills-block", "prompt-longer-than-block"])
def test_cached_greedy_decoding_gives_the_same_tokens_as_the_uncached_path(prompt_len, new_tokens):
    model = make_model(seed=3)
    prompt = tokens(2, prompt_len, seed=4)
    cached = model.generate(prompt, new_tokens, top_k=1)
    uncached = model.generate(prompt, new_tokens, top_k=1, use_cache=False)
    assert cached.shape == (2, prompt_len + new_tokens)
    assert torch.equal(cached, uncached)


def test_use_cache_is_the_default_and_sampling_with_a_seed_matches_the_uncached_path():
    model = make_model(seed=5)
    prompt = tokens(1, 4, seed=6)
    default = model.generate(prompt, 12, generator=torch.Generator().manual_seed(0))
    uncached = model.generate(prompt, 12, generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(default, uncached)


def test_cache_memory_is_two_times_layers_times_width_times_context_times_bytes():
    model = make_model(n_layer=3, d_model=32, n_head=4).eval()
    _, cache = model.forward_with_cache(tokens(2, 7))
    assert len(cache) == 3 and cache[0][0].shape == (2, 4, 7, 8)
    measured = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in cache)
    assert measured == model.kv_cache_bytes(7, batch_size=2) == 2 * 3 * 32 * 7 * 2 * 4
    assert model.kv_cache_bytes(7, dtype=torch.bfloat16) == 2 * 3 * 32 * 7 * 2


def test_cache_rejects_contexts_beyond_block_size_and_bad_arguments():
    model = make_model().eval()
    _, cache = model.forward_with_cache(tokens(1, T))
    with pytest.raises(ValueError, match="exceed block_size"):
        model.forward_with_cache(tokens(1, 1), cache)
    with pytest.raises(ValueError, match="2 .keys, values. pairs"):
        model.forward_with_cache(tokens(1, 1), cache[:1])
    with pytest.raises(ValueError, match="sequences"):
        model.forward_with_cache(tokens(3, 1), model.forward_with_cache(tokens(1, 2))[1])
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.kv_cache_bytes(T + 1)
    with pytest.raises(ValueError, match="context must be a positive int"):
        model.kv_cache_bytes(0)
    with pytest.raises(TypeError, match="dtype"):
        model.kv_cache_bytes(4, dtype="float16")
    with pytest.raises(TypeError, match="use_cache"):
        model.generate(tokens(1, 2), 3, use_cache="yes")


def test_numpy_numbers_are_accepted_like_python_numbers():
    import numpy as np

    config = GPTConfig(vocab_size=np.int64(20), n_layer=np.int32(1), n_head=np.int64(2), d_model=np.int64(8),
                       block_size=np.int64(8), dropout=np.float32(0.0), bias=np.bool_(True))
    assert type(config.vocab_size) is int and type(config.block_size) is int
    model = TinyGPT(config)
    torch.manual_seed(0)
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), np.int64(3), temperature=np.float32(0.7),
                         top_k=np.int64(5), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 4)
    assert model.kv_cache_bytes(np.int64(4), batch_size=np.int64(2)) > 0


@pytest.mark.parametrize("temperature", [1e-45, 1e-300, 5e-324])
def test_generate_with_a_vanishing_temperature_is_greedy_instead_of_failing(temperature):
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=30, n_layer=1, n_head=2, d_model=16, block_size=16))
    start = torch.zeros(2, 3, dtype=torch.long)
    greedy = model.generate(start, 6, top_k=1)
    cold = model.generate(start, 6, temperature=temperature, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cold, greedy)


@pytest.mark.parametrize("kwargs", [{"use_cache": "False"}, {"temperature": "0.7"}, {"max_new_tokens": 2.0},
                                    {"top_k": 2.5}])
def test_generate_refuses_strings_and_floats_where_flags_and_counts_belong(kwargs):
    model = TinyGPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, d_model=8, block_size=8))
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises((TypeError, ValueError)):
        model.generate(torch.zeros(1, 1, dtype=torch.long), **args)
    with pytest.raises(TypeError):
        model.num_parameters(non_embedding="False")


# --------------------------------------------------------------------------- grouped-query attention (chapter 15)


def test_n_kv_head_defaults_to_n_head_and_gives_identical_numbers():
    default, explicit = make_model(seed=7).eval(), make_model(seed=7, n_kv_head=4).eval()
    assert default.config.n_kv_head == 4
    assert default.state_dict().keys() == explicit.state_dict().keys()
    for name, tensor in default.state_dict().items():
        assert torch.equal(tensor, explicit.state_dict()[name]), name
    idx = tokens(2, T)
    assert torch.equal(default(idx)[0], explicit(idx)[0])
    assert torch.equal(default.generate(idx[:, :3], 8, top_k=1), explicit.generate(idx[:, :3], 8, top_k=1))


@pytest.mark.parametrize("n_kv_head", [1, 2], ids=["multi-query", "grouped-query"])
@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "manual"])
def test_grouped_query_cache_is_smaller_and_cached_logits_still_equal_the_full_pass(n_kv_head, use_sdpa):
    model = make_model(seed=8, n_kv_head=n_kv_head, n_layer=3).eval()
    set_sdpa(model, use_sdpa)
    idx = tokens(2, T)
    full, _ = model(idx)
    logits, cache = model.forward_with_cache(idx[:, :6])
    pieces = [logits]
    for t in range(6, T):
        logits, cache = model.forward_with_cache(idx[:, t:t + 1], cache)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0][0].shape == (2, n_kv_head, T, 8)  # head_size 32 / 4 = 8
    measured = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in cache)
    assert measured == model.kv_cache_bytes(T, batch_size=2) == 2 * 3 * n_kv_head * 8 * T * 2 * 4
    assert model.kv_cache_bytes(T) * 4 // n_kv_head == make_model(n_layer=3).kv_cache_bytes(T)


def test_grouped_query_with_one_group_per_head_equals_multi_head_when_keys_are_shared():
    # Multi-query attention is multi-head attention whose heads all use the same keys and values:
    # copying the one K/V head into every head of a multi-head model gives the same logits.
    mqa = make_model(seed=9, n_kv_head=1).eval()
    mha = make_model(seed=9).eval()
    state = mha.state_dict()
    for name, tensor in mqa.state_dict().items():
        if "c_attn" in name:
            q, k, v = tensor.split([32, 8, 8], dim=0)
            state[name] = torch.cat([q, k.repeat(4, *[1] * (k.dim() - 1)), v.repeat(4, *[1] * (v.dim() - 1))])
        else:
            state[name] = tensor
    mha.load_state_dict(state)
    idx = tokens(2, T)
    torch.testing.assert_close(mha(idx)[0], mqa(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv_head,error,match", [
    (3, ValueError, "n_kv_head"),
    (0, ValueError, "n_kv_head"),
    (8, ValueError, "n_kv_head"),
    (2.0, TypeError, "n_kv_head"),
    ("2", TypeError, "n_kv_head"),
    (True, TypeError, "n_kv_head"),
])
def test_config_validates_n_kv_head(n_kv_head, error, match):
    with pytest.raises(error, match=match):
        GPTConfig(vocab_size=V, n_head=4, d_model=32, n_kv_head=n_kv_head)


def test_n_kv_head_accepts_numpy_integers():
    import numpy as np
    config = GPTConfig(vocab_size=V, n_head=4, d_model=32, n_kv_head=np.int64(2))
    assert config.n_kv_head == 2 and type(config.n_kv_head) is int
