"""Cross-check our label masking against TRL's.

On the same examples and tokenizer, the positions `prepare_instruction_data` trains on (labels != -100) must be the
positions TRL's `SFTTrainer` trains on for prompt-completion data: TRL tokenises `prompt` alone and
`prompt + completion`, takes the common prefix as the prompt, builds a `completion_mask` from the rest and turns it
into -100 labels; its data collator pads them. We run TRL's own code (SFTTrainer's dataset preparation and its
collator), not a copy of it.

Known, explained differences, handled explicitly:
- the separator: our response includes the leading " " (usually part of the first response token, "Ġword"), so TRL is
  given completion = " " + response and everything matches exactly. With the tutorial's layout instead (a prompt
  ending in a space), TRL's common-prefix rule matches us where the space merges into the first response word, and
  trains one token fewer (the lone "Ġ" before a digit, which it counts as prompt) elsewhere;
- EOS: TRL appends the EOS *string* to a plain completion, we append the EOS *id*; they tokenise identically;
- chat style: TRL renders the assistant turn with the chat template, which ends in "<|im_end|>\\n" and adds no EOS; we
  end the turn with "<|im_end|>" + EOS. Everything before that last token is identical.
"""

import warnings

import pytest
import torch
from datasets import Dataset
from datasets.utils.logging import disable_progress_bar

from instruct_course.bench.sft import trl_records
from instruct_course.data.masking import IGNORE_INDEX, InstructionCollator, format_prompt, prepare_instruction_data
from instruct_course.models import load_model

trl = pytest.importorskip("trl")
SFTConfig, SFTTrainer = trl.SFTConfig, trl.SFTTrainer

N = 96  # examples: every task family of the world appears


@pytest.fixture(scope="module")
def records(splits):
    recs = splits["train"][:N]
    assert len({r["task"] for r in recs}) >= 10
    return recs


def trl_prepared(tok, rows, tmp_path):
    "Run TRL's SFTTrainer dataset preparation on prompt-completion `rows`; returns the trainer (dataset, collator)."
    disable_progress_bar()
    cfg = SFTConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        max_length=160,
        completion_only_loss=True,
        packing=False,
        padding_free=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SFTTrainer(
            model=load_model("tiny", device="cpu"),
            args=cfg,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )


def trained(labels):
    return [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]


def test_same_tokens_and_trained_positions(tok, records, tmp_path):
    tr = trl_prepared(tok, trl_records(records), tmp_path)
    ds = tr.train_dataset
    assert len(ds) == len(records)  # TRL dropped nothing
    ours = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in records]
    for i, (o, t) in enumerate(zip(ours, ds)):
        assert t["input_ids"] == o["input_ids"], f"record {i}: token ids differ"
        assert trained(t["labels"]) == trained(o["labels"]), f"record {i}: trained positions differ"
        assert t["labels"] == o["labels"]
        assert o["labels"][-1] == tok.eos_token_id  # EOS is trained by both
    # and after TRL's own collator (right padding, -100 labels): the same batch as ours
    batch_trl = tr.data_collator([{k: ds[i][k] for k in ("input_ids", "labels")} for i in range(16)])
    batch_ours = InstructionCollator(tok)(ours[:16])
    assert torch.equal(batch_trl["labels"], batch_ours["labels"])
    assert torch.equal(batch_trl["input_ids"], batch_ours["input_ids"])
    assert torch.equal(batch_trl["attention_mask"], batch_ours["attention_mask"])


def _trailing_space_rows(records):
    # the tutorial's layout: prompt "...Response: " and completion "answer"
    return [
        {"prompt": format_prompt(r["instruction"], r["input"]) + " ", "completion": r["response"].strip()}
        for r in records
    ]


def test_prompt_with_trailing_space(tok, records, tmp_path):
    # Tokenised alone, such a prompt ends in a lone "Ġ". Two cases, both explained:
    # - merged: in the full text the space merges into the first response token ("Ġdef"); the prompt's tokens are not a
    #   prefix, TRL's common-prefix rule drops the lone "Ġ", and TRL lands on exactly our sequence and mask;
    # - lone: before a digit (our tokenizer splits digits) the space stays a token of its own; TRL counts it as prompt,
    #   we count it as response (our separator belongs to the response), so TRL trains our positions minus that one.
    rows = _trailing_space_rows(records)
    ds = trl_prepared(tok, rows, tmp_path).train_dataset
    space = tok(" ", add_special_tokens=False)["input_ids"]
    counts = {"merged": 0, "lone": 0}
    for r, row, t in zip(records, rows, ds):
        o = prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"])
        assert t["input_ids"] == o["input_ids"]
        p = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        if t["input_ids"][: len(p)] != p:
            counts["merged"] += 1
            assert t["labels"] == o["labels"]
        else:
            counts["lone"] += 1
            first = trained(o["labels"])[0]
            assert [o["input_ids"][first]] == space and trained(t["labels"]) == trained(o["labels"])[1:]
    assert counts["merged"] > 0 and counts["lone"] > 0, counts  # both cases occur in the data: each branch is exercised


def test_tutorial_separate_tokenisation_does_not_match(tok, records, tmp_path):
    # failure side: the source tutorial masks len(tokenize(prompt)) tokens. With the trailing-space prompt, wherever
    # the space merges into the first response word, that masks the first response token too: NOT TRL's mask.
    rows = _trailing_space_rows(records)
    ds = trl_prepared(tok, rows, tmp_path).train_dataset
    mismatches = merged = 0
    for r, t in zip(rows, ds):
        full = tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        tutorial = [IGNORE_INDEX] * len(p) + full[len(p) :]
        merged += full[: len(p)] != p
        if trained(tutorial) != trained(t["labels"]):
            mismatches += 1
            assert len(trained(tutorial)) == len(trained(t["labels"])) - 1  # exactly the first response token is lost
    assert mismatches == merged > len(records) // 2


def test_missing_separator_is_detected(tok, records, tmp_path):
    # failure side: giving TRL the response without our leading " " changes the tokens (":answer" vs ": answer"),
    # so the comparison fails -- the separator must be accounted for, not ignored.
    rows = [{"prompt": p["prompt"], "completion": p["completion"].lstrip(" ")} for p in trl_records(records[:24])]
    ds = trl_prepared(tok, rows, tmp_path).train_dataset
    ours = [prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"]) for r in records[:24]]
    assert all(t["input_ids"] != o["input_ids"] for o, t in zip(ours, ds))


def test_chat_style_differs_only_in_the_end_of_turn(tok, records, tmp_path):
    # conversational prompt-completion: TRL applies the chat template (ends "<|im_end|>\n", no EOS appended);
    # ours ends the turn with "<|im_end|>" + EOS. Identical up to the last token, which both train.
    recs = records[:24]
    rows = [
        {
            "prompt": [{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")}],
            "completion": [{"role": "assistant", "content": r["response"].strip()}],
        }
        for r in recs
    ]
    ds = trl_prepared(tok, rows, tmp_path).train_dataset
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(nl) == 1
    for r, t in zip(recs, ds):
        o = prepare_instruction_data(r["instruction"], r["response"], tok, input=r["input"], style="chat")
        assert t["input_ids"][:-1] == o["input_ids"][:-1] and trained(t["labels"]) == trained(o["labels"])
        assert t["input_ids"][-1] == nl[0] and o["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(t["input_ids"][-2]) == "<|im_end|>"
