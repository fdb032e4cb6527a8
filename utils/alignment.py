"""Aligning a language model to what users ask for (chapter 20): log-probabilities of responses,
supervised fine-tuning on response tokens only, and the DPO loss.

Conventions, shared with TRL and most papers: a training sequence is ``prompt + response`` as one row of
token ids ``input_ids`` of shape ``(batch, T)``; ``response_mask`` (same shape, bool or 0/1) marks the
response tokens. A causal model's logits at position ``t - 1`` predict token ``t``, so the log-probability
of a response is

    log π(response | prompt) = Σ_{t marked} log p(input_ids[t] | input_ids[:t]),

and position 0 can never be marked: nothing predicts the first token.

DPO (Rafailov et al., 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", arXiv:2305.18290, eq. 7) trains the policy π on pairs (chosen y_w, rejected y_l) against a frozen
reference π_ref:

    loss = −log σ(β · [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]),

and the implicit rewards are β · (log π(y) − log π_ref(y)).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ._checks import ArgumentTypeError, check_real

__all__ = ["sequence_logprob", "sft_loss", "dpo_loss", "judge", "make_alignment_data", "parse_instruction",
           "task_answer", "TASKS"]


def _check_ids_and_mask(input_ids: Any, response_mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor):
        raise ArgumentTypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] < 2:
        raise ValueError("input_ids must have shape (batch, sequence_length) with batch ≥ 1 and length ≥ 2 "
                         f"(a prompt token and a response token), got shape {tuple(input_ids.shape)}")
    if input_ids.dtype != torch.long:
        raise ArgumentTypeError(f"input_ids must hold token ids as torch.long, got {input_ids.dtype}; "
                                "use input_ids.long()")
    if not isinstance(response_mask, torch.Tensor):
        raise ArgumentTypeError("response_mask must be a torch.Tensor of bools (or 0/1) with the shape of "
                                f"input_ids, got {type(response_mask).__name__}")
    if response_mask.shape != input_ids.shape:
        raise ValueError(f"response_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(response_mask.shape)}")
    if response_mask.dtype != torch.bool:
        if response_mask.is_floating_point() and torch.isnan(response_mask).any():
            raise ValueError("response_mask contains NaN; mark response tokens with True (or 1) and the rest "
                             "with False (or 0)")
        if not torch.all((response_mask == 0) | (response_mask == 1)):
            raise ValueError("response_mask must hold only True/False (or 1/0)")
        response_mask = response_mask.bool()
    if response_mask[:, 0].any():
        raise ValueError("response_mask marks position 0, which no token predicts: the first token of every "
                         "row must belong to the prompt (put at least one prompt token, e.g. a start token, first)")
    empty = (~response_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty[:10]} of response_mask mark no response token: every row needs a response")
    return input_ids, response_mask.to(input_ids.device)


def _token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) for t = 1 … T-1: shape (batch, T-1)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logprob(model: torch.nn.Module, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token_t | tokens_<t) over the response positions of each row: shape ``(batch,)``.

    ``model(input_ids)`` may return the logits, a ``(logits, loss)`` pair (``TinyGPT``) or an object with
    ``.logits`` (Hugging Face). Gradients flow if the model is in a grad-enabled context.

    Example:
        >>> model = TinyGPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, d_model=8, block_size=8))
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> sequence_logprob(model, ids, torch.tensor([[False, False, True, True]])).shape
        torch.Size([1])
    """
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    input_ids, mask = _check_ids_and_mask(input_ids, response_mask)
    logits = _logits_of(model(input_ids))
    if logits.shape[:2] != input_ids.shape:
        raise ValueError(f"the model returned logits of shape {tuple(logits.shape)} for input_ids of shape "
                         f"{tuple(input_ids.shape)}; expected (batch, T, vocab_size)")
    token_logps = _token_logprobs(logits, input_ids)
    return (token_logps * mask[:, 1:]).sum(dim=1)


def _logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise ArgumentTypeError(f"the model returned {type(output).__name__}; expected logits, (logits, loss) "
                            "or an object with .logits")


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the response tokens only (the prompt tokens are masked out).

    Every marked token of the batch counts once (a token-level mean, as TRL's SFT trainer computes it),
    so long responses weigh more than short ones.

    Example:
        >>> logits = torch.zeros(1, 3, 5)  # uniform predictions over 5 tokens
        >>> round(sft_loss(logits, torch.tensor([[0, 1, 2]]), torch.tensor([[0, 0, 1]])).item(), 4)  # ln 5
        1.6094
    """
    if not isinstance(logits, torch.Tensor):
        raise ArgumentTypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    input_ids, mask = _check_ids_and_mask(input_ids, response_mask)
    if logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits must have shape (batch, T, vocab_size) with (batch, T) = {tuple(input_ids.shape)}, "
                         f"got {tuple(logits.shape)}")
    targets = input_ids[:, 1:].masked_fill(~mask[:, 1:], -100)  # -100: ignored by cross_entropy
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=-100)


def _as_logps(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, bool) or isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a tensor of log-probabilities, got {type(value).__name__}")
    try:
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ArgumentTypeError(f"{name} must be a tensor (or array) of log-probabilities, "
                                f"got {type(value).__name__}") from exc
    if not tensor.is_floating_point():
        raise ArgumentTypeError(f"{name} must hold floating-point log-probabilities, got {tensor.dtype}")
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must have shape (batch,) with batch ≥ 1, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return tensor


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss (Rafailov et al., 2023) averaged over the batch, and the implicit rewards per pair.

    Returns ``(loss, chosen_rewards, rejected_rewards)`` with
    ``loss = mean(−log σ(β·[(π_c − ref_c) − (π_r − ref_r)]))`` and ``rewards = β·(π − ref)``; the
    rewards are detached (for logging). All four inputs are sequence log-probabilities of shape ``(batch,)``
    (:func:`sequence_logprob`); the reference ones normally come from a frozen copy of the starting model.

    Example:
        >>> loss, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
        ...                         torch.tensor([-1.5]), beta=0.1)
        >>> round(loss.item(), 4)  # -log sigmoid(0.1 * (0.5 - (-0.5)))
        0.6444
    """
    beta = check_real("beta", beta, positive=True)
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    tensors = [_as_logps(n, v) for n, v in zip(names, (policy_chosen_logps, policy_rejected_logps,
                                                       ref_chosen_logps, ref_rejected_logps))]
    shapes = {n: tuple(t.shape) for n, t in zip(names, tensors)}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"the four log-probability tensors must have the same shape (one entry per pair), got {shapes}")
    pc, pr, rc, rr = tensors
    logits = (pc - rc) - (pr - rr)
    loss = -F.logsigmoid(beta * logits).mean()
    return loss, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()



# ---------------------------------------------------------------------------------------------------------------
# The course's instruction data (chapter 20): small tasks whose answers a program can check.

TASKS = {
    "upper": ("Write in capitals: {w}", "Uppercase please: {w}", "Make {w} upper case"),
    "reverse": ("Reverse: {w}", "Spell {w} backwards", "Write {w} in reverse"),
    "count": ("How many letters in {w}?", "Count the letters: {w}", "Length of {w}?"),
    "first": ("First letter of {w}?", "Which letter starts {w}?", "Initial of {w}?"),
}
HOUSE_FORMAT = "Answer: {answer}"
CHATTY_FORMATS = ("Sure! The answer is {answer}. Hope that helps!", "Hmm, I think it is {answer}, happy to help.",
                  "Great question! It's {answer} :)")


def task_answer(task: str, word: str) -> str:
    """The correct answer of an instruction ``task`` applied to ``word``.

    Example:
        >>> task_answer("reverse", "abc"), task_answer("count", "abc")
        ('cba', '3')
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if not isinstance(word, str) or not word.isalpha() or not word.isascii() or not word.islower():
        raise ValueError(f"word must be a non-empty string of lowercase ASCII letters, got {word!r}")
    return {"upper": word.upper(), "reverse": word[::-1], "count": str(len(word)), "first": word[0]}[task]


def parse_instruction(prompt: str) -> tuple[str, str] | None:
    """``(task, word)`` if ``prompt`` is one of the instruction templates of :data:`TASKS`, else ``None``.

    Example:
        >>> parse_instruction("Spell cat backwards")
        ('reverse', 'cat')
    """
    import re

    if not isinstance(prompt, str):
        raise ArgumentTypeError(f"prompt must be a str, got {type(prompt).__name__}")
    for task, templates in TASKS.items():
        for template in templates:
            pattern = "^" + re.escape(template).replace(re.escape("{w}"), "([a-z]+)") + "$"
            match = re.match(pattern, prompt.strip())
            if match:
                return task, match.group(1)
    return None


def judge(prompt: str, response: str) -> tuple[float, str]:
    """Score a response to an instruction: ``(score, verdict)``, half for the format and half for the answer.

    The house format is exactly ``"Answer: <one word>"``; on format, the answer is that word, otherwise
    the answer counts as right when the correct answer appears as a word anywhere in the response. So
    1.0 ``"correct"``, 0.5 ``"wrong answer, on format"`` or ``"correct, off format"``, 0.0 ``"wrong"``.
    A prompt that is not one of the course's instructions gets ``(nan, "cannot judge")``. A program, not a
    model: it never changes.

    Example:
        >>> judge("Reverse: abc", "Answer: cba"), judge("Reverse: abc", "Sure! The answer is cba.")
        ((1.0, 'correct'), (0.5, 'correct, off format'))
    """
    import re

    if not isinstance(response, str):
        raise ArgumentTypeError(f"response must be a str, got {type(response).__name__}")
    parsed = parse_instruction(prompt)
    if parsed is None:
        return float("nan"), "cannot judge"
    answer = task_answer(*parsed)
    on_format = re.fullmatch(r"Answer: (\S+)", response.strip())
    if on_format:
        return (1.0, "correct") if on_format.group(1) == answer else (0.5, "wrong answer, on format")
    if answer in re.findall(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?", response):
        return 0.5, "correct, off format"
    return 0.0, "wrong"


def _near_miss(task: str, word: str, rng: Any) -> str:
    """A plausible wrong answer."""
    answer = task_answer(task, word)
    if task == "count":
        return str(len(word) + rng.choice([-1, 1]))
    if task == "first":
        return rng.choice([c for c in word[1:] if c != word[0]] or ["x" if word[0] != "x" else "y"])
    if task == "upper":
        i = rng.randrange(len(word))
        wrong = answer[:i] + answer[i].lower() + answer[i + 1:]
        return wrong
    wrong = word if word != answer else word[1:] + word[0]  # reverse: the word unreversed (or rotated)
    return wrong


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def make_alignment_data(seed: int = 0, n_train: int = 1500, n_dev: int = 150, n_test: int = 200,
                        chatty_share: float = 0.3) -> tuple[Any, Any]:
    """The instruction and preference data of chapter 20 (``data/alignment_sft.csv``, ``alignment_preferences.csv``).

    Words are random lowercase strings of 3–6 letters. Train, dev and test words come from separate random
    streams, and a dev or test word is kept only if it is at least 2 edits away from every train word (and
    test from dev), so no held-out prompt is a near-copy of a training prompt. Demonstrations (``response``)
    are correct; a share ``chatty_share`` of the train and dev ones is written in a chatty style instead of
    the house format ``"Answer: X"`` (demonstrations written by many people are not uniform). Each
    preference pair prefers the correct, house-format answer to a wrong one, an off-format one, or both.

    Example:
        >>> sft, prefs = make_alignment_data(n_train=20, n_dev=5, n_test=5)
        >>> sorted(sft["split"].unique()), sorted(prefs["kind"].unique())
        (['dev', 'test', 'train'], ['off format', 'wrong', 'wrong, off format'])
    """
    import random

    import pandas as pd

    from ._checks import check_int, check_seed

    seed = check_seed("seed", seed)
    n_train, n_dev, n_test = (check_int(n, v) for n, v in (("n_train", n_train), ("n_dev", n_dev), ("n_test", n_test)))
    chatty_share = check_real("chatty_share", chatty_share, non_negative=True)
    if chatty_share > 1:
        raise ValueError(f"chatty_share must be in [0, 1], got {chatty_share}")
    letters = "abcdefghijklmnopqrstuvwxyz"

    def words(stream: str, n: int, avoid: set[str]) -> list[str]:
        rng, out, seen = random.Random(f"{seed}-{stream}-words"), [], set()
        for _ in range(200 * n):
            if len(out) == n:
                return out
            w = "".join(rng.choice(letters) for _ in range(rng.randint(3, 6)))
            if w in seen or any(_edit_distance(w, a) < 2 for a in avoid):
                continue
            seen.add(w)
            out.append(w)
        raise ValueError(f"could not draw {n} distinct {stream} words far from the others; ask for fewer")

    train_words = words("train", n_train, set())
    dev_words = words("dev", n_dev, set(train_words))
    test_words = words("test", n_test, set(train_words) | set(dev_words))
    sft_rows, pref_rows = [], []
    for split, split_words in (("train", train_words), ("dev", dev_words), ("test", test_words)):
        rng = random.Random(f"{seed}-{split}-rows")
        for w in split_words:
            task = rng.choice(sorted(TASKS))
            prompt = rng.choice(TASKS[task]).format(w=w)
            answer = task_answer(task, w)
            chatty = split != "test" and rng.random() < chatty_share
            response = (rng.choice(CHATTY_FORMATS) if chatty else HOUSE_FORMAT).format(answer=answer)
            sft_rows.append({"split": split, "task": task, "word": w, "prompt": prompt, "answer": answer,
                             "response": response, "style": "chatty" if chatty else "house"})
            kind = rng.choice(["wrong", "off format", "wrong, off format"])
            shown = _near_miss(task, w, rng) if kind.startswith("wrong") else answer
            rejected = (rng.choice(CHATTY_FORMATS) if kind.endswith("off format") else HOUSE_FORMAT).format(answer=shown)
            pref_rows.append({"split": split, "task": task, "word": w, "prompt": prompt,
                              "chosen": HOUSE_FORMAT.format(answer=answer), "rejected": rejected, "kind": kind})
    return pd.DataFrame(sft_rows), pd.DataFrame(pref_rows)
