"""train.dpo_loss: the loss against TRL's DPOTrainer and a hand computation, log-probs over response tokens only
(pitfall 10), padding independence (also with absolute positions), bad pairs refused or dropped and counted."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from instruct_course.core import CourseError
from instruct_course.data.masking import IGNORE_INDEX, prepare_instruction_data
from instruct_course.train.dpo_loss import (
    collate_pairs,
    collate_rows,
    dpo_loss,
    prepare_completion,
    prepare_pairs,
    sequence_logprobs,
)

# --- the loss -------------------------------------------------------------------------------------------------------


def test_loss_hand_computed():
    # log-ratios +2 (chosen) and -1 (rejected), beta 0.1: z = 0.3, loss = log(1 + e^-0.3)
    loss, rc, rr = dpo_loss(
        torch.tensor([-8.0]), torch.tensor([-12.0]), torch.tensor([-10.0]), torch.tensor([-11.0]), beta=0.1
    )
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.3)), abs=1e-6)
    assert rc.item() == pytest.approx(0.2, abs=1e-6) and rr.item() == pytest.approx(-0.1, abs=1e-6)
    assert not rc.requires_grad
    # two pairs: the mean of the two losses
    l2, _, _ = dpo_loss(
        torch.tensor([-8.0, -5.0]),
        torch.tensor([-12.0, -5.0]),
        torch.tensor([-10.0, -5.0]),
        torch.tensor([-11.0, -5.0]),
        beta=0.1,
    )
    assert l2.item() == pytest.approx((math.log1p(math.exp(-0.3)) + math.log(2)) / 2, abs=1e-6)


def test_loss_sign_and_stability():
    good = dpo_loss(torch.tensor([-8.0]), torch.tensor([-12.0]), torch.tensor([-10.0]), torch.tensor([-11.0]))[0]
    swapped = dpo_loss(torch.tensor([-12.0]), torch.tensor([-8.0]), torch.tensor([-11.0]), torch.tensor([-10.0]))[0]
    assert swapped > math.log(2) > good  # preferring the rejected answer costs more than indifference
    # -logsigmoid, not -log(sigmoid): finite where the naive form is inf
    big = dpo_loss(torch.tensor([-1000.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=1.0)[0]
    assert torch.isfinite(big) and big.item() == pytest.approx(1000.0, rel=1e-4)
    assert torch.isinf(-torch.log(torch.sigmoid(torch.tensor(-1000.0))))
    # gradient pushes chosen up, rejected down
    pc, pr = torch.tensor([-8.0], requires_grad=True), torch.tensor([-12.0], requires_grad=True)
    dpo_loss(pc, pr, torch.tensor([-10.0]), torch.tensor([-11.0]))[0].backward()
    assert pc.grad.item() < 0 < pr.grad.item()


def test_label_smoothing_is_cdpo():
    args = (torch.tensor([-8.0]), torch.tensor([-12.0]), torch.tensor([-10.0]), torch.tensor([-11.0]))
    eps, z = 0.1, 0.3
    want = -(1 - eps) * F.logsigmoid(torch.tensor(z)) - eps * F.logsigmoid(torch.tensor(-z))
    assert dpo_loss(*args, beta=0.1, label_smoothing=eps)[0].item() == pytest.approx(want.item(), abs=1e-6)
    assert dpo_loss(*args, beta=0.1, label_smoothing=eps)[0] > dpo_loss(*args, beta=0.1)[0]
    with pytest.raises(CourseError, match="label_smoothing"):
        dpo_loss(*args, label_smoothing=0.5)
    with pytest.raises(CourseError, match="beta"):
        dpo_loss(*args, beta=0.0)
    with pytest.raises(CourseError, match="shape"):
        dpo_loss(torch.zeros(2), torch.zeros(1), torch.zeros(1), torch.zeros(1))


def test_loss_equals_trl_formula_on_random_logps():
    # TRL 1.16, trl/trainer/dpo_trainer.py, DPOTrainer._compute_loss:
    # chosen_logratios = chosen_logps - ref_chosen_logps (l.1354), delta_score = chosen_scores - rejected_scores
    # (l.1383, reverse_kl), loss_type "sigmoid": -F.logsigmoid(self.beta * delta_score) (l.1388), then
    # per_sequence_loss.mean() (l.1498); rewards = beta * logratios (l.1575). Reproduced here on random numbers;
    # test_loss_equals_trl_dpotrainer below runs TRL's trainer itself.
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(64, generator=g) * 20 - 50 for _ in range(4))
    for beta in (0.05, 0.1, 0.5, 2.0):
        trl_loss = (-F.logsigmoid(beta * ((pc - rc) - (pr - rr)))).mean()
        ours, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta)
        assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6)
        assert torch.allclose(cr, beta * (pc - rc)) and torch.allclose(rj, beta * (pr - rr))


def test_loss_equals_trl_dpotrainer(tok, tiny_sft, tiny, pairs, tmp_path):
    "Run TRL's own DPOTrainer.compute_loss on a batch and compare with ours on our own tokenisation of the same pairs."
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    policy, ref = tiny_sft, tiny  # different models: non-zero log-ratios
    rows = [
        {"prompt": p["prompt"], "chosen": " " + p["chosen"], "rejected": " " + p["rejected"]} for p in pairs[:8]
    ]  # ours puts one space between
    for beta in (0.1, 0.5):
        cfg = trl.DPOConfig(
            output_dir=str(tmp_path),
            report_to="none",
            use_cpu=True,
            bf16=False,
            beta=beta,
            per_device_train_batch_size=8,
            max_length=160,
            activation_checkpointing=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = trl.DPOTrainer(
                model=copy.deepcopy(policy),
                ref_model=copy.deepcopy(ref),
                args=cfg,
                train_dataset=Dataset.from_list(rows),
                processing_class=tok,
            )
            batch = tr.data_collator([tr.train_dataset[i] for i in range(len(rows))])
            tr.model.train()
            with torch.no_grad():
                trl_loss = tr.compute_loss(tr.model, batch).item()
        m = {k: v[-1] for k, v in tr._metrics["train"].items()}
        ex, _ = prepare_pairs(pairs[:8], tok)
        ours_batch = collate_pairs(ex, tok)
        assert torch.equal(
            ours_batch["input_ids"], batch["input_ids"]
        )  # the same tokens (TRL: prompt + completion + EOS)
        assert torch.equal(
            ours_batch["labels"] != IGNORE_INDEX, batch["completion_mask"].bool()
        )  # and the same trained positions
        with torch.no_grad():
            pc, pr = sequence_logprobs(
                policy, ours_batch["input_ids"], ours_batch["attention_mask"], ours_batch["labels"]
            ).chunk(2)
            rc, rr = sequence_logprobs(
                ref, ours_batch["input_ids"], ours_batch["attention_mask"], ours_batch["labels"]
            ).chunk(2)
        loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta)
        assert abs(trl_loss - math.log(2)) > 0.01  # a non-trivial loss is being compared
        assert loss.item() == pytest.approx(trl_loss, abs=1e-4)
        assert pc.mean().item() == pytest.approx(m["logps/chosen"], abs=1e-3) and pr.mean().item() == pytest.approx(
            m["logps/rejected"], abs=1e-3
        )
        assert cr.mean().item() == pytest.approx(m["rewards/chosen"], abs=1e-4) and rj.mean().item() == pytest.approx(
            m["rewards/rejected"], abs=1e-4
        )
        assert (cr - rj).mean().item() == pytest.approx(m["rewards/margins"], abs=1e-4)
        assert (cr > rj).float().mean().item() == pytest.approx(m["rewards/accuracies"], abs=1e-6)
    # the failure side: counting prompt tokens too would not match TRL
    with torch.no_grad():
        allb = {
            **ours_batch,
            "labels": torch.where(ours_batch["attention_mask"].bool(), ours_batch["input_ids"], IGNORE_INDEX),
        }
        pc_all, _ = sequence_logprobs(policy, **allb).chunk(2)
    assert abs(pc_all.mean().item() - m["logps/chosen"]) > 1.0


# --- log-probs ------------------------------------------------------------------------------------------------------


def test_completion_tokens_match_sft_masking(tok, pairs):
    for p in pairs[:10]:
        ours = prepare_completion(p["prompt"], p["chosen"], tok)
        sft = prepare_instruction_data(p["instruction"], p["chosen"], tok, input=p["input"])
        assert ours["input_ids"] == sft["input_ids"] and ours["labels"] == sft["labels"]
        assert ours["labels"][-1] == tok.eos_token_id  # EOS inside
        n_prompt = len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
        assert (
            ours["input_ids"][:n_prompt] == tok(p["prompt"], add_special_tokens=False)["input_ids"]
        )  # prompt is a prefix
        assert (
            all(x == IGNORE_INDEX for x in ours["labels"][:n_prompt]) and IGNORE_INDEX not in ours["labels"][n_prompt:]
        )


def test_logprobs_sum_over_response_tokens_only(tok, tiny_sft, pairs):
    ex = [prepare_completion(p["prompt"], p["chosen"], tok) for p in pairs[:4]]
    b = collate_rows(ex, tok)
    with torch.no_grad():
        got = sequence_logprobs(tiny_sft, **b)
        logp = tiny_sft(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float().log_softmax(-1)
    for i, e in enumerate(ex):  # by hand: token t is predicted at position t-1; only response positions count
        want = sum(
            logp[i, t - 1, e["input_ids"][t]].item()
            for t in range(1, len(e["input_ids"]))
            if e["labels"][t] != IGNORE_INDEX
        )
        assert got[i].item() == pytest.approx(want, abs=1e-3)
    # changing a prompt token (the conditioning) may change the number, but marking prompt tokens as targets must change
    # it a lot,
    # and so must dropping a response token from the targets: the sum covers exactly the response
    with torch.no_grad():
        with_prompt = sequence_logprobs(
            tiny_sft, **{**b, "labels": torch.where(b["attention_mask"].bool(), b["input_ids"], IGNORE_INDEX)}
        )
        lab = b["labels"].clone()
        first = (lab != IGNORE_INDEX).int().argmax(1)
        lab[torch.arange(len(ex)), first] = IGNORE_INDEX
        without_first = sequence_logprobs(tiny_sft, **{**b, "labels": lab})
    assert (with_prompt < got - 1).all() and (without_first > got).all()
    with pytest.raises(CourseError, match="no response tokens"):
        sequence_logprobs(tiny_sft, b["input_ids"], b["attention_mask"], torch.full_like(b["labels"], IGNORE_INDEX))


def test_padding_side_does_not_change_logps(tok, tiny_sft, pairs):
    ex, _ = prepare_pairs(pairs[:6], tok)
    assert (
        len({len(e["chosen"]["input_ids"]) for e in ex} | {len(e["rejected"]["input_ids"]) for e in ex}) > 1
    )  # real padding happens
    with torch.no_grad():
        right = sequence_logprobs(tiny_sft, **collate_pairs(ex, tok, "right"))
        left = sequence_logprobs(tiny_sft, **collate_pairs(ex, tok, "left"))
        alone = torch.stack([sequence_logprobs(tiny_sft, **collate_rows([e["chosen"]], tok))[0] for e in ex])
    assert torch.allclose(right, left, atol=1e-3)
    assert torch.allclose(right[: len(ex)], alone, atol=1e-3)  # and batching changes nothing either


# --- data and bad input ---------------------------------------------------------------------------------------------


def test_bad_pairs_refused(tok, pairs):
    bad = [dict(p) for p in pairs[:3]]
    bad[1]["rejected"] = bad[1]["chosen"]
    with pytest.raises(CourseError, match=r"chosen"):
        prepare_pairs(bad, tok)
    missing = [dict(p) for p in pairs[:3]]
    del missing[2]["rejected"]
    with pytest.raises(CourseError, match="rejected"):
        prepare_pairs(missing, tok)
    with pytest.raises(CourseError):
        prepare_pairs([], tok)


def test_too_long_pairs_dropped_and_counted(tok, pairs):
    long = dict(pairs[0])
    long["chosen"] = "word " * 300
    ex, rep = prepare_pairs([long] + pairs[1:5], tok, max_length=64)
    assert rep["dropped_too_long"] == 1 and rep["kept"] == 4 and len(ex) == 4


def test_padding_side_with_absolute_positions(tok, pairs):
    """GPT-2 style absolute position embeddings: left padding shifts positions unless position_ids are counted from the
    first real token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=1, n_head=2)).eval()
    ex, _ = prepare_pairs(pairs[:4], tok)
    r, left = collate_pairs(ex, tok, "right"), collate_pairs(ex, tok, "left")
    with torch.no_grad():
        assert torch.allclose(
            sequence_logprobs(m, r["input_ids"], r["attention_mask"], r["labels"]),
            sequence_logprobs(m, left["input_ids"], left["attention_mask"], left["labels"]),
            atol=1e-4,
        )
        # without our position ids the left-padded rows would be scored at shifted positions: a different number
        naive = lambda b: (
            lambda lp: (
                lp.gather(2, b["labels"][:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
                * (b["labels"][:, 1:] != IGNORE_INDEX)
            ).sum(-1)
        )(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].log_softmax(-1))
        assert not torch.allclose(naive(r), naive(left), atol=1e-3)
