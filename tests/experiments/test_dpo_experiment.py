"experiments.dpo: the per-family evaluation subset, the settings make valid configs, the result rows and the plot."

from instruct_course.experiments.dpo import DPO_VS_PPO_SETTINGS, _row, eval_subset, plot_tradeoff
from instruct_course.train.dpo import DPOConfig
from instruct_course.train.ppo import PPOConfig


def test_eval_subset_is_the_first_records_of_each_family():
    recs = [{"task": t, "i": i} for t in "ba" for i in range(5)]
    assert [(r["task"], r["i"]) for r in eval_subset(recs, 2)] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_settings_make_valid_configs():
    for s in DPO_VS_PPO_SETTINGS.values():
        for beta in s["dpo_betas"]:
            DPOConfig(beta=beta, max_steps=s["dpo_steps"], batch_size=s["dpo_batch"], learning_rate=s["dpo_lr"])
        for coef in s["ppo_kl_coefs"]:
            PPOConfig(
                steps=s["ppo_steps"], batch_size=s["ppo_batch"], mini_batch_size=min(16, s["ppo_batch"]), kl_coef=coef
            )


def test_rows_and_tradeoff_plot():
    res = {"gold_greedy": 0.9, "gold_sampled": 0.8, "exact_match_greedy": 0.8, "kl": 0.0, "kl_se": 0.0, "sample_len": 5}
    rows = [
        _row("sft", 0.0, res),
        _row("dpo", 0.1, {**res, "kl": 1.0}),
        _row("ppo", 0.5, {**res, "kl": 2.0}, reward="rm"),
    ]
    assert rows[1]["beta"] == 0.1 and rows[2]["reward"] == "rm" and "kl_se" in rows[0]
    ax = plot_tradeoff(rows)
    assert len(ax.lines) == 3 and "rm" in ax.get_legend().get_texts()[1].get_text()
