"""utils.alignment: response log-probabilities, SFT loss on response tokens, the DPO loss (chapter 20).

Each function is checked against a hand computation, and the DPO loss against TRL's own DPO trainer code
(when trl is installed): TRL 1.x has no free-standing loss function, so the test calls the loss part of
``DPOTrainer._compute_loss`` with precomputed log-probabilities.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from utils import alignment
from utils.alignment import dpo_loss, sequence_logprob, sft_loss
from utils.models import GPTConfig, TinyGPT


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given: makes hand computation possible."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        return self.logits[: idx.shape[0], : idx.shape[1]], None


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TinyGPT(GPTConfig(vocab_size=7, n_layer=1, n_head=1, d_model=8, block_size=8)).eval()


def test_sequence_logprob_equals_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4)
    ids = torch.tensor([[0, 1, 2, 3, 0], [3, 3, 1, 0, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    got = sequence_logprob(FixedLogits(logits), ids, mask)
    logp = torch.log_softmax(logits, -1)
    expected = [logp[0, 1, 2] + logp[0, 2, 3], logp[1, 0, 3] + logp[1, 1, 1] + logp[1, 2, 0] + logp[1, 3, 2]]
    assert got.shape == (2,)
    assert torch.allclose(got, torch.stack(expected), atol=1e-6)


def test_sequence_logprob_of_tinygpt_matches_its_own_loss():
    model = tiny_model()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[False, True, True, True, True, True]])
    with torch.no_grad():
        _, loss = model(ids[:, :-1], ids[:, 1:])
        got = sequence_logprob(model, ids, mask)
    assert math.isclose(got.item(), -5 * loss.item(), rel_tol=1e-5)


def test_sequence_logprob_accepts_01_masks_and_keeps_gradients():
    model = tiny_model().train()
    ids = torch.tensor([[1, 2, 3, 4]])
    out = sequence_logprob(model, ids, torch.tensor([[0, 0, 1, 1]]))
    out.sum().backward()
    assert model.lm_head.weight.grad is not None


@pytest.mark.parametrize("mask, match", [
    (torch.tensor([[0, 1, 1], [0, 0, 0]]), "no response token"),
    (torch.tensor([[1, 1, 1], [0, 1, 1]]), "position 0"),
    (torch.tensor([[0, 1], [0, 1]]), "shape"),
    (torch.tensor([[0, 2, 1], [0, 1, 1]]), "True/False"),
    (torch.tensor([[0.0, float("nan"), 1.0], [0.0, 1.0, 1.0]]), "NaN"),
])
def test_sequence_logprob_refuses_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        sequence_logprob(tiny_model(), torch.tensor([[1, 2, 3], [1, 2, 3]]), mask)


def test_sequence_logprob_refuses_bad_ids_and_models():
    mask = torch.tensor([[0, 1, 1]])
    with pytest.raises(TypeError, match="torch.long"):
        sequence_logprob(tiny_model(), torch.tensor([[1.0, 2.0, 3.0]]), mask)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sequence_logprob(tiny_model(), [[1, 2, 3]], mask)
    with pytest.raises(ValueError, match="shape"):
        sequence_logprob(tiny_model(), torch.tensor([1, 2, 3]), mask)
    with pytest.raises(TypeError, match="nn.Module"):
        sequence_logprob(lambda x: x, torch.tensor([[1, 2, 3]]), mask)


def test_sft_loss_counts_response_tokens_only():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5)
    ids = torch.tensor([[0, 1, 2, 3], [4, 3, 2, 1]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    logp = torch.log_softmax(logits, -1)
    terms = [logp[0, 1, 2], logp[0, 2, 3], logp[1, 0, 3], logp[1, 1, 2], logp[1, 2, 1]]
    assert math.isclose(sft_loss(logits, ids, mask).item(), -torch.stack(terms).mean().item(), rel_tol=1e-6)
    # changing the logits that predict prompt tokens changes nothing
    changed = logits.clone()
    changed[0, 0] += 10.0  # predicts ids[0, 1], a prompt token
    assert math.isclose(sft_loss(changed, ids, mask).item(), sft_loss(logits, ids, mask).item(), rel_tol=1e-7)
    # with every token after the first marked it is the ordinary language-model loss
    full = torch.ones_like(ids)
    full[:, 0] = 0
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 5), ids[:, 1:].reshape(-1))
    assert math.isclose(sft_loss(logits, ids, full).item(), plain.item(), rel_tol=1e-6)


def test_sft_loss_refuses_bad_input():
    ids, mask = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match="logits"):
        sft_loss(torch.zeros(1, 2, 5), ids, mask)
    with pytest.raises(ValueError, match="position 0"):
        sft_loss(torch.zeros(1, 3, 5), ids, torch.tensor([[1, 1, 1]]))
    with pytest.raises(TypeError):
        sft_loss(np.zeros((1, 3, 5)), ids, mask)


def hand_dpo(pc, pr, rc, rr, beta):
    losses = [-math.log(1 / (1 + math.exp(-beta * ((a - c) - (b - d))))) for a, b, c, d in zip(pc, pr, rc, rr)]
    return sum(losses) / len(losses), [beta * (a - c) for a, c in zip(pc, rc)], [beta * (b - d) for b, d in zip(pr, rr)]


def test_dpo_loss_equals_hand_computation():
    pc, pr, rc, rr = [-3.0, -10.0, -1.0], [-4.0, -9.0, -7.5], [-3.5, -9.0, -2.0], [-3.5, -9.5, -6.0]
    for beta in (0.1, 0.5, 2):
        loss, cr, rjr = dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta=beta)
        want, want_c, want_r = hand_dpo(pc, pr, rc, rr, beta)
        assert math.isclose(loss.item(), want, rel_tol=1e-6)
        assert np.allclose(cr.numpy(), want_c, atol=1e-6) and np.allclose(rjr.numpy(), want_r, atol=1e-6)
    # equal policy and reference: loss ln 2, rewards zero
    z = torch.zeros(4)
    loss, cr, _ = dpo_loss(z - 1, z - 2, z - 1, z - 2)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-7) and torch.all(cr == 0)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = torch.tensor([-2.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # gradient descent raises log π(chosen), lowers log π(rejected)
    assert math.isclose(pc.grad.item(), -0.5 * 0.5, rel_tol=1e-6)  # -β·σ(0)


def test_dpo_loss_accepts_numpy_and_numpy_beta():
    a = np.array([-1.0, -2.0])
    loss, _, _ = dpo_loss(a, a - 1, a, a, beta=np.float64(0.2))
    assert math.isclose(loss.item(), -math.log(1 / (1 + math.exp(-0.2))), rel_tol=1e-9)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"beta": 0.0}, ValueError, "positive"),
    ({"beta": -1}, ValueError, "positive"),
    ({"beta": float("nan")}, ValueError, "finite"),
    ({"beta": "0.1"}, TypeError, "number"),
    ({"beta": True}, TypeError, "number"),
])
def test_dpo_loss_refuses_bad_beta(kwargs, error, match):
    t = torch.zeros(2)
    with pytest.raises(error, match=match):
        dpo_loss(t, t, t, t, **kwargs)


def test_dpo_loss_refuses_nan_mismatched_and_empty():
    t = torch.zeros(3)
    with pytest.raises(ValueError, match="NaN"):
        dpo_loss(torch.tensor([0.0, float("nan"), 0.0]), t, t, t)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(t, torch.zeros(2), t, t)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(torch.zeros(3, 1), t, t, t)
    with pytest.raises(ValueError, match="batch"):
        dpo_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0))
    with pytest.raises(TypeError, match="floating"):
        dpo_loss(torch.zeros(3, dtype=torch.long), t, t, t)


def trl_dpo(pc, pr, rc, rr, beta):
    """TRL's DPO loss and mean rewards for given sequence log-probabilities.

    Runs the loss part of ``trl.DPOTrainer._compute_loss`` (trl 1.x; loss_type "sigmoid", the default,
    reference log-probabilities precomputed) on a stand-in model whose per-token log-probabilities put each
    sequence's log-probability on its single completion token.
    """
    from trl import DPOTrainer

    n = len(pc)
    per_token = torch.tensor(list(pc) + list(pr), dtype=torch.float32)[:, None]  # (2n, 1): chosen then rejected
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros(2 * n, 1),
                              mean_logits=torch.zeros(2 * n, 1), is_top1=torch.zeros(2 * n, 1, dtype=torch.bool))
    identity = lambda x: x  # noqa: E731 (one process: gathering is the identity)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device="cpu", gather_for_metrics=identity,
                                                                         gather=identity),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * n, 2, dtype=torch.long), "attention_mask": torch.ones(2 * n, 2),
              "completion_mask": torch.tensor([[0, 1]] * (2 * n)),
              "ref_chosen_logps": torch.tensor(rc, dtype=torch.float32),
              "ref_rejected_logps": torch.tensor(rr, dtype=torch.float32)}
    loss = DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, False)
    metrics = trainer._metrics["train"]
    return float(loss), metrics["rewards/chosen"][-1], metrics["rewards/rejected"][-1]


def test_dpo_loss_matches_trl():
    pytest.importorskip("trl")
    rng = np.random.default_rng(0)
    for beta in (0.05, 0.1, 0.5, 1.0):
        pc, pr, rc, rr = (rng.normal(-20, 5, size=6).astype(np.float32) for _ in range(4))
        loss, cr, rjr = dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta=beta)
        trl_loss, trl_c, trl_r = trl_dpo(pc, pr, rc, rr, beta)
        assert abs(loss.item() - trl_loss) < 1e-6, (beta, loss.item(), trl_loss)
        assert abs(cr.mean().item() - trl_c) < 1e-6 and abs(rjr.mean().item() - trl_r) < 1e-6


def test_sequence_logprob_matches_trl_selective_log_softmax():
    utils_trl = pytest.importorskip("trl.trainer.utils")
    torch.manual_seed(2)
    logits = torch.randn(3, 6, 9)
    ids = torch.randint(0, 9, (3, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    theirs = (utils_trl.selective_log_softmax(logits[:, :-1], ids[:, 1:]) * mask[:, 1:]).sum(1)
    ours = sequence_logprob(FixedLogits(logits), ids, mask)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_module_exports():
    assert {"sequence_logprob", "sft_loss", "dpo_loss", "judge", "make_alignment_data"} <= set(alignment.__all__)
    import utils

    assert utils.alignment is alignment


# --- the data and the judge of chapter 20 ---------------------------------------------------------------------

import pandas as pd  # noqa: E402

import utils  # noqa: E402
from utils.alignment import judge, make_alignment_data, parse_instruction, task_answer  # noqa: E402


@pytest.fixture(scope="module")
def files():
    read = lambda name: pd.read_csv(utils.data_path(name), dtype=str, keep_default_na=False)  # noqa: E731
    return read("alignment_sft.csv"), read("alignment_preferences.csv")


def test_data_files_equal_a_fresh_generation(files):
    sft, prefs = make_alignment_data(seed=0)
    pd.testing.assert_frame_equal(files[0], sft.astype(str))
    pd.testing.assert_frame_equal(files[1], prefs.astype(str))
    assert files[0]["split"].value_counts().to_dict() == {"train": 1500, "test": 200, "dev": 150}


def test_held_out_prompts_are_not_near_copies_of_training_prompts(files):
    sft = files[0]
    train = sft.loc[sft["split"] == "train", "word"].tolist()
    for split in ("dev", "test"):
        held = sft.loc[sft["split"] == split, "word"].tolist()
        assert not set(held) & set(train)
        assert all(alignment._edit_distance(w, t) >= 2 for w in held for t in train), split
    assert not set(sft.loc[sft["split"] == "test", "prompt"]) & set(sft.loc[sft["split"] != "test", "prompt"])


def test_data_is_consistent_with_the_judge(files):
    sft, prefs = files
    assert all(task_answer(t, w) == a for t, w, a in zip(sft["task"], sft["word"], sft["answer"]))
    assert all(parse_instruction(p) == (t, w) for p, t, w in zip(sft["prompt"], sft["task"], sft["word"]))
    house = sft[sft["style"] == "house"]
    assert all(judge(p, r) == (1.0, "correct") for p, r in zip(house["prompt"], house["response"]))
    chatty = sft[sft["style"] == "chatty"]
    assert all(judge(p, r)[0] == 0.5 for p, r in zip(chatty["prompt"], chatty["response"]))
    assert (sft.loc[sft["split"] == "test", "style"] == "house").all()
    assert 0.2 < (sft.loc[sft["split"] == "train", "style"] == "chatty").mean() < 0.4
    assert all(judge(p, c)[0] == 1.0 for p, c in zip(prefs["prompt"], prefs["chosen"]))
    expected = {"wrong": 0.5, "off format": 0.5, "wrong, off format": 0.0}
    assert all(judge(p, r)[0] == expected[k] for p, r, k in zip(prefs["prompt"], prefs["rejected"], prefs["kind"]))


def test_judge_examples_and_bad_input():
    assert judge("Reverse: abc", "Answer: cba") == (1.0, "correct")
    assert judge("Reverse: abc", " Answer: cba ") == (1.0, "correct")
    assert judge("Reverse: abc", "Answer: abc") == (0.5, "wrong answer, on format")
    assert judge("Reverse: abc", "Answer: cba!") == (0.5, "wrong answer, on format")
    assert judge("Reverse: abc", "Answer: cb a") == (0.0, "wrong")
    assert judge("Reverse: abc", "cba") == (0.5, "correct, off format")
    assert judge("First letter of sun?", "Great question! It's s :)") == (1 / 2, "correct, off format")
    assert judge("First letter of sun?", "Great question! It's u :)")[0] == 0.0  # the "s" of "It's" is no answer
    assert judge("How many letters in abcd?", "Sure! The answer is 4.")[0] == 0.5
    score, verdict = judge("What is the capital of France?", "Answer: Paris")
    assert math.isnan(score) and verdict == "cannot judge"
    with pytest.raises(TypeError):
        judge("Reverse: abc", None)
    with pytest.raises(TypeError):
        parse_instruction(3)
    with pytest.raises(ValueError, match="task"):
        task_answer("sort", "abc")
    with pytest.raises(ValueError, match="lowercase"):
        task_answer("upper", "ABC")


def test_make_alignment_data_refuses_bad_arguments():
    with pytest.raises(TypeError):
        make_alignment_data(seed="0")
    with pytest.raises(ValueError):
        make_alignment_data(n_train=0)
    with pytest.raises(ValueError):
        make_alignment_data(chatty_share=1.5)
    with pytest.raises(ValueError):
        make_alignment_data(chatty_share=float("nan"))
