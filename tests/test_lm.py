"""Language-model RL: the transformer and its KV cache, the sampler, tokenizer, tasks and verifiers,
the advantage and KL maths, and the experiment's contract (warm start, RL, resume, load_policy)."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli, run_cli_cases

from models.transformer import Transformer, TransformerConfig
from rl.errors import ConfigError, parse_settings
from rl.lm import learner as lm_learner
from rl.lm import load_policy, objectives, tasks
from rl.lm.config import LMConfig, default_hparams, resolved
from rl.lm.policy import pass_at_k
from rl.lm.sampler import filter_logits, make_recompute_sampler, make_sampler
from rl.lm.tokenizer import BOS, EOS, PAD, CharTokenizer

TOKENIZER = CharTokenizer()


@pytest.fixture(scope="module")
def tiny_model():
    config = TransformerConfig(vocab_size=TOKENIZER.vocab_size, num_layers=2, d_model=32, num_heads=4, max_len=32,
                               value_head=True)
    model = Transformer(config)
    prompts, mask = TOKENIZER.encode_prompts(["12*34=", "5+6=", "999*99=", "7="])
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(prompts), jnp.zeros(prompts.shape, jnp.int32))
    return model, params, prompts, mask


def full_forward_logprobs(model, params, prompts, mask, tokens):
    full = np.concatenate([prompts, tokens], 1)
    full_mask = np.concatenate([mask, np.ones(tokens.shape, bool)], 1)
    positions = np.maximum(np.cumsum(full_mask, 1) - 1, 0)
    logits, _, _ = model.apply(params, full, positions, full_mask)
    logp = jax.nn.log_softmax(logits)[:, prompts.shape[1] - 1:-1]
    return np.take_along_axis(np.asarray(logp), tokens[..., None], -1)[..., 0]


def test_kv_cache_sampler_matches_recomputing_the_prefix_and_returns_true_logprobs(tiny_model):
    model, params, prompts, mask = tiny_model
    greedy = make_sampler(model, 10, temperature=0.0)(params, prompts, mask, jax.random.PRNGKey(1))
    recomputed = np.asarray(make_recompute_sampler(model, 10)(params, prompts, mask))
    live = np.asarray(greedy.mask)
    np.testing.assert_array_equal(np.asarray(greedy.tokens)[live], recomputed[live])
    sampled = make_sampler(model, 10, temperature=1.0)(params, prompts, mask, jax.random.PRNGKey(2))
    tokens, live = np.asarray(sampled.tokens), np.asarray(sampled.mask)
    expected = full_forward_logprobs(model, params, prompts, mask, tokens)
    np.testing.assert_allclose(np.asarray(sampled.logprobs)[live], expected[live], atol=1e-5)


def test_after_eos_a_completion_is_padding_with_a_false_mask(tiny_model):
    model, params, prompts, mask = tiny_model
    out = make_sampler(model, 12, temperature=3.0)(params, prompts, mask, jax.random.PRNGKey(3))
    tokens, live = np.asarray(out.tokens), np.asarray(out.mask)
    for row in range(len(tokens)):
        ends = np.flatnonzero(tokens[row] == EOS)
        if len(ends):  # mask true up to and including the first EOS, padding after it
            assert live[row, :ends[0] + 1].all() and not live[row, ends[0] + 1:].any()
            assert (tokens[row, ends[0] + 1:] == PAD).all()
        else:
            assert live[row].all()
    assert np.asarray(out.logprobs)[~live].sum() == 0.0


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(np.asarray(filter_logits(logits, top_k=2))).tolist() == [[True, True, False, False]]
    assert np.isfinite(np.asarray(filter_logits(logits, top_p=0.7))).tolist() == [[True, True, False, False]]
    assert np.isfinite(np.asarray(filter_logits(logits, top_p=0.9))).tolist() == [[True, True, True, False]]
    assert np.isfinite(np.asarray(filter_logits(logits, top_p=0.1))).tolist() == [[True, False, False, False]]


def test_tokenizer_left_pads_prompts_and_decodes_up_to_eos():
    tokens, mask = TOKENIZER.encode_prompts(["1+2=", "10*3="])
    assert tokens.shape == (2, 6) and tokens[0, 0] == PAD and tokens[0, 1] == BOS and mask.sum(1).tolist() == [5, 6]
    assert TOKENIZER.decode([*TOKENIZER.encode("123"), EOS, *TOKENIZER.encode("9")]) == "123"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        TOKENIZER.encode("x")


def test_arithmetic_splits_are_disjoint_and_verified_exactly():
    task = tasks.make_task("multiplication")
    rng = np.random.default_rng(0)
    train = {p.prompt for p in task.sample(rng, 3000, "train")}
    test = task.sample(rng, 300, "test")
    assert not train & {p.prompt for p in test}
    a, b = map(int, test[0].prompt[:-1].split("*"))
    assert 100 <= a <= 999 and 10 <= b <= 99 and test[0].target == str(a * b)
    assert task.rewards(test[:2], [test[0].target, "0"]).tolist() == [1.0, 0.0]


def test_shorter_warm_start_problems_cover_every_operand_length_and_never_a_held_out_pair():
    task = tasks.make_task("multiplication")
    shorter = task.sample_shorter(np.random.default_rng(0), 4000)
    pairs = [tuple(map(int, p.prompt[:-1].split("*"))) for p in shorter]
    assert all(p.target == str(a * b) for p, (a, b) in zip(shorter, pairs, strict=True))
    lengths = {(len(str(a)), len(str(b))) for a, b in pairs}
    assert lengths == {(i, j) for i in (1, 2, 3) for j in (1, 2)}
    a, b = np.array(pairs).T
    assert a.min() >= 1 and a.max() <= 999 and b.min() >= 1 and b.max() <= 99
    assert not tasks._held_out(a, b, task.held_out_fraction).any()
    test = {p.prompt for p in task.sample(np.random.default_rng(1), 2000, "test")}
    assert not test & {p.prompt for p in shorter}
    for changes in ({"shorter_fraction": 1.0}, {"shorter_fraction": 0.3, "algo": "grpo"},
                    {"shorter_fraction": 0.3, "algo": "sft", "task": "countdown"}):
        with pytest.raises(ConfigError, match="shorter_fraction"):
            LMConfig(**changes).validate()


def test_arithmetic_rewards_exact_digit_and_prefix_credit_by_hand():
    def row(text, eos=True, n=6):
        ids = [*TOKENIZER.encode(text), *([EOS] if eos else [])]
        return ids + [PAD] * (n - len(ids))

    answers = jnp.asarray([row("5535")] * 5)
    tokens = jnp.asarray([row("5535"), row("5536"), row("553"), row("55350", eos=False), row("6535")])
    exact = objectives.arithmetic_rewards(tokens, answers, "exact")
    digits = objectives.arithmetic_rewards(tokens, answers, "digits")
    prefix = objectives.arithmetic_rewards(tokens, answers, "prefix")
    np.testing.assert_allclose(exact, [1, 0, 0, 0, 0])
    # 5 scored positions (4 digits, EOS): all; 3 digits + EOS; 3 digits (EOS lands on "5"); 4 digits;
    # every position but the first
    np.testing.assert_allclose(digits, [1, 0.8, 0.6, 0.8, 0.8])
    # only the positions before the first wrong one count
    np.testing.assert_allclose(prefix, [1, 0.6, 0.6, 0.8, 0])
    for reward in ("digits", "prefix"):
        with pytest.raises(ConfigError, match="reward"):
            LMConfig(task="countdown", reward=reward).validate()


def test_process_rewards_give_each_token_the_normalised_steps_from_it_on_by_hand():
    """Answer "55" (3 steps with EOS): "55" scores [1, 1, 1], "56" [1, 0, 0]; the 6 steps' mean is
    2/3 and their standard deviation sqrt(2)/3; a token's advantage sums its own and later steps."""
    answers = jnp.asarray([[*TOKENIZER.encode("55"), EOS, PAD]] * 2)
    tokens = jnp.asarray([[*TOKENIZER.encode("55"), EOS, PAD], [*TOKENIZER.encode("56"), EOS, PAD]])
    steps = objectives.arithmetic_step_rewards(tokens, answers)
    np.testing.assert_allclose(steps, [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(objectives.arithmetic_rewards(tokens, answers, "prefix"), [1, 1 / 3])
    scored = jnp.broadcast_to(objectives.answer_positions(answers), steps.shape)
    centred = objectives.process_advantages(steps[None], scored[None], normalise=False)[0]
    np.testing.assert_allclose(centred, [[1, 2 / 3, 1 / 3, 0], [-1, -4 / 3, -2 / 3, 0]], atol=1e-6)
    normalised = objectives.process_advantages(steps[None], scored[None])[0]
    np.testing.assert_allclose(normalised, centred / (np.sqrt(2) / 3 + 1e-4), atol=1e-5)
    for changes in ({"algo": "rloo"}, {"algo": "ppo"}, {"kl_in_reward": True}, {"task": "countdown"}):
        with pytest.raises(ConfigError, match="reward"):
            LMConfig(**{"algo": "grpo", "reward": "process", **changes}).validate()
    with pytest.raises(ConfigError, match="reward"):  # a custom reward has no steps
        lm_learner.make_learner(LMConfig(algo="grpo", reward="process"), reward_fn=lambda i, t: i * 0.0)


def test_countdown_problems_are_solvable_and_rewarded_one_tenth_or_zero():
    task = tasks.make_task("countdown")
    problems = task.sample(np.random.default_rng(0), 200, "train")
    assert all(task.reward(p, p.target) == 1.0 for p in problems)
    p = tasks.Problem("3,5,2>16:", "(3+5)*2", (3, 5, 2), 16)
    assert task.reward(p, "2*(5+3)") == 1.0
    assert task.reward(p, "3+5+2") == 0.1  # well formed, wrong value
    assert task.reward(p, "(3+5)*2*2") == 0.1  # right form, a number used twice
    assert task.reward(p, "(3+5*2") == 0.0 and task.reward(p, "") == 0.0
    assert not {q.prompt for q in problems} & {q.prompt for q in task.sample(np.random.default_rng(1), 100, "test")}


def test_advantages_win_probabilities_kl_estimators_and_pass_at_k():
    rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(objectives.group_advantages(rewards, "rloo")[0], [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    np.testing.assert_allclose(objectives.group_advantages(rewards, "dr_grpo")[0], [0.5, -0.5, -0.5, 0.5])
    np.testing.assert_allclose(objectives.group_advantages(rewards, "grpo")[0], [1, -1, -1, 1], atol=1e-3)
    assert np.all(np.asarray(objectives.group_advantages(rewards, "grpo")[1]) == 0)
    np.testing.assert_allclose(objectives.group_advantages(rewards, "reinforce")[0], [0.75, -0.25, -0.25, 0.75])
    np.testing.assert_allclose(objectives.win_probability(rewards)[0], [5 / 6, 1 / 6, 1 / 6, 5 / 6])
    np.testing.assert_allclose(objectives.win_probability(rewards)[1], [0.5] * 4)
    ref, cur = jnp.array([-1.0]), jnp.array([-1.5])  # D = 0.5
    assert float(objectives.kl_terms(ref, cur, "k1")[0]) == pytest.approx(-0.5)
    assert float(objectives.kl_terms(ref, cur, "k2")[0]) == pytest.approx(0.125)
    assert float(objectives.kl_terms(ref, cur, "k3")[0]) == pytest.approx(np.exp(0.5) - 1.5)
    advantages = jnp.array([1.5, -0.5, 0.0, -1.0])
    np.testing.assert_array_equal(objectives.keep_advantages(advantages, "positive"), [1.5, 0, 0, 0])
    np.testing.assert_array_equal(objectives.keep_advantages(advantages, "negative"), [0, -0.5, 0, -1.0])
    np.testing.assert_array_equal(objectives.keep_advantages(advantages, "both"), advantages)
    order = np.asarray(objectives.group_permutations(jax.random.PRNGKey(0), 64, 8))
    assert np.all(np.sort(order, axis=1) == np.arange(8))  # each row a permutation of the group
    assert np.mean(order == np.arange(8)) < 0.3 and len({tuple(row) for row in order}) > 60
    assert pass_at_k(8, 0, 4) == 0.0 and pass_at_k(8, 8, 4) == 1.0 and pass_at_k(8, 5, 4) == 1.0
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)


TINY = ["--num-layers", "1", "--d-model", "32", "--eval-problems", "8", "--pass-k", "1", "--eval-points", "1",
        "--task", "addition", "--checkpoint-seconds", "0", "--no-progress", "--chunk-updates", "2",
        "--train-pool", "512"]


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """A GRPO run that trains its own warm start first (4 updates, checkpoints every 2)."""
    root = tmp_path_factory.mktemp("lm")
    command = ["experiments.lm_rl", "--algo", "grpo", "--num-updates", "4", "--prompts-per-update", "4",
               "--group-size", "4", "--sft-updates", "4", "--sft-batch", "16", *TINY]
    done = run_cli(*command, "--out", str(root / "grpo"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, command


def test_rl_trains_its_warm_start_first_and_writes_the_contract(lm_runs):
    root, _ = lm_runs
    summary = json.loads((root / "grpo" / "summary.json").read_text())
    assert json.loads((root / "grpo-sft" / "config.json").read_text())["lm"]["algo"] == "sft"
    assert summary["init"] == str(root / "grpo-sft")
    for key in ("before", "after"):
        assert 0.0 <= summary["pass_at_1"][key] <= 1.0 and 0.0 <= summary["pass_at_k"][key] <= 1.0
    assert summary["pass_at_k"]["k"] == 1 and summary["samples_seen"] == 4 * 16
    assert summary["tokens_per_second"] > 0 and summary["wall_seconds"] > 0
    rows = [json.loads(line) for line in (root / "grpo" / "metrics.jsonl").read_text().splitlines()]
    for name in ("reward_mean", "reward_std", "zero_adv_frac", "clip_frac", "kl", "entropy", "response_length"):
        assert name in rows[-1]
    policy = load_policy(root / "grpo")
    completions = policy.generate(["12+34=", "5+6="], max_new_tokens=6)
    assert len(completions) == 2 and all(isinstance(c, str) and len(c) <= 6 for c in completions)


def test_comparison_table_runs_each_algorithm_from_one_start_and_rereads_finished_runs(lm_runs, tmp_path):
    from experiments import lm_compare, lm_rl

    root, _ = lm_runs
    base = lm_rl.Args(lm=LMConfig(task="addition", num_layers=1, d_model=32, num_updates=2, prompts_per_update=4,
                                  group_size=4, train_pool=512, data_shards=0),
                      init=str(root / "grpo-sft"), sft_batch=8, eval_problems=8, pass_k=2, eval_points=1,
                      run=lm_rl.RunArgs(num_seeds=1, out=str(tmp_path / "table"), progress=False, checkpoint_seconds=0,
                                                        eval_episodes=0))
    args = lm_compare.Args(base=base, algos=("sft", "rloo"))
    rows = lm_compare.main(args)
    assert [r["algo"] for r in rows] == ["sft (continued)", "rloo"]
    assert all(r["samples"] == 2 * 4 * 4 for r in rows)  # continued SFT sees as many problems as RL samples
    assert json.loads((tmp_path / "table" / "sft" / "config.json").read_text())["lm"]["num_updates"] == 4
    before = (tmp_path / "table" / "rloo" / "summary.json").stat().st_mtime
    assert lm_compare.main(args) == rows  # finished runs are read back, not run again
    assert (tmp_path / "table" / "rloo" / "summary.json").stat().st_mtime == before
    assert "| sft (continued) |" in (tmp_path / "table" / "table.md").read_text()
    with pytest.raises(ConfigError, match="init"):
        lm_compare.Args(base=dataclasses.replace(base, init=None)).validate()


def test_lm_resume_repeats_the_uninterrupted_run(lm_runs):
    """Stopped after update 2 (its newer checkpoint, snapshot and summary removed, as a kill leaves
    it), the run resumes to the same metrics and evaluation."""
    root, command = lm_runs
    shutil.copytree(root / "grpo", root / "resumed")
    (root / "resumed" / "summary.json").unlink()
    for folder in ("checkpoints", "snapshots"):
        shutil.rmtree(root / "resumed" / folder / "4")
    assert (root / "resumed" / "checkpoints" / "2").is_dir()
    resumed = run_cli(*command, "--init", str(root / "grpo-sft"), "--out", str(root / "resumed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = [(root / name / "metrics.jsonl").read_text() for name in ("grpo", "resumed")]
    assert metrics[0] == metrics[1]
    summaries = [json.loads((root / name / "summary.json").read_text()) for name in ("grpo", "resumed")]
    assert summaries[0]["curve"] == summaries[1]["curve"]


@pytest.mark.parametrize("algo", ["reinforce", "rloo", "grpo", "dr_grpo", "dapo", "ppo", "dpo", "sppo",
                                  "grpo-positive", "grpo-shuffled"])
def test_every_rl_algorithm_learns_a_verifiable_preference(algo):
    """Reward 1 when a completion starts with the digit 7: from a random tiny model (about 1 in 24),
    every algorithm raises the probability of a leading 7 within 12 updates (GRPO also with positive
    advantages only); GRPO with its rewards shuffled within groups (the control, ``shuffle_rewards``)
    does not."""
    seven = TOKENIZER.encode("7")[0]
    algo, _, variant = algo.partition("-")
    shuffled = variant == "shuffled"
    config = LMConfig(task="addition", algo=algo, num_layers=1, d_model=32, num_updates=12, lr=3e-3,
                      prompts_per_update=8, group_size=8, max_new_tokens=6, kl_coef=0.01,
                      num_minibatches=2, update_epochs=2, sppo_eta=4.0, dpo_beta=0.5, train_pool=256,
                      shuffle_rewards=shuffled, advantages="positive" if variant == "positive" else "both")
    learner, parts = lm_learner.make_learner(
        config, reward_fn=lambda indices, tokens: (tokens[:, 0] == seven).astype(jnp.float32))
    hparams = default_hparams(config)
    state = learner.init(jax.random.PRNGKey(0), hparams)

    def p_seven(params):
        prompts, mask = TOKENIZER.encode_prompts(["12+34=", "5+6=", "100+9="], parts["prompt_len"])
        logits, _, _ = parts["model"].apply(params, prompts, np.maximum(np.cumsum(mask, 1) - 1, 0), mask)
        return float(jax.nn.softmax(logits[:, -1])[:, seven].mean())

    before = p_seven(state.params)
    update = jax.jit(learner.update)
    for _ in range(config.num_updates):
        state, metrics = update(state, hparams)
        assert np.isfinite(float(metrics["total_loss"])), (algo, metrics)
    learned = p_seven(state.params) > 2 * before + 0.05
    assert learned != shuffled, (algo, before, p_seven(state.params))


def test_gradient_noise_estimates_recover_a_known_signal_and_noise():
    """Batch gradients drawn as G + noise of known variance: the estimates find |G|^2, tr Sigma_B,
    their ratio, the noise scale and the mean cosine; pure noise has |G|^2 about 0."""
    from rl.gradient_noise import GradientNoise, mean_gradient_cosine

    rng = np.random.default_rng(0)
    dim, sigma, batches = 2000, 0.05, 400
    signal = rng.normal(size=dim) / np.sqrt(dim)  # |G| about 1
    noisy, pure, other = GradientNoise(batch_size=16), GradientNoise(batch_size=16), GradientNoise(batch_size=16)
    for _ in range(batches):
        noisy.add(signal + sigma * rng.normal(size=dim))
        pure.add(sigma * rng.normal(size=dim))
        other.add(-signal + sigma * rng.normal(size=dim))
    got, noise_only = noisy.summary(), pure.summary()
    trace = dim * sigma**2  # tr Sigma_B = 5, five times |G|^2
    assert got["grad_norm_sq"] == pytest.approx(signal @ signal, rel=0.05)
    assert 0 < got["grad_norm_sq_se"] < 0.05 * (signal @ signal)
    assert got["batch_noise"] == pytest.approx(trace, rel=0.05)
    assert got["snr"] == pytest.approx((signal @ signal) / trace, rel=0.1)
    assert got["noise_scale"] == pytest.approx(16 * trace / (signal @ signal), rel=0.1)
    assert got["mean_cosine"] == pytest.approx((signal @ signal) / (signal @ signal + trace), rel=0.1)
    assert abs(noise_only["grad_norm_sq"]) < 0.01 and abs(noise_only["mean_cosine"]) < 0.01
    zero = GradientNoise(batch_size=4)
    for _ in range(3):
        zero.add(np.zeros(dim))
    assert zero.summary()["noise_scale"] == float("inf") and np.isnan(zero.summary()["mean_cosine"])
    cosine, cosine_se = mean_gradient_cosine(noisy, other)
    assert cosine == pytest.approx(-1.0, abs=0.05) and 0 < cosine_se < 0.05


@pytest.mark.parametrize("algo", ["sft", "grpo", "grpo-process"])
def test_batch_gradient_is_the_gradient_the_update_follows(algo):
    """From a fresh Adam state, one update of one minibatch moves every parameter by
    ``-lr * g / (|g| + eps)`` of its clipped gradient ``g``: ``batch_gradient`` (what
    ``experiments.lm_noise`` measures) is that gradient, on the same batch (for GRPO with the
    per-token advantages of process rewards too, scored by the task's own verifier)."""
    seven = TOKENIZER.encode("7")[0]
    algo, _, reward = algo.partition("-")
    config = LMConfig(task="addition", algo=algo, num_layers=1, d_model=32, lr=1e-3, prompts_per_update=8,
                      group_size=8, max_new_tokens=6, train_pool=256, reward=reward or "exact")
    learner, parts = lm_learner.make_learner(
        config, reward_fn=None if reward else lambda indices, tokens: (tokens[:, 0] == seven).astype(jnp.float32))
    hparams = default_hparams(config)
    state = learner.init(jax.random.PRNGKey(1), hparams)
    grads = jax.jit(parts["batch_gradient"])(state, hparams)
    after, _ = jax.jit(learner.update)(state, hparams)
    norm = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    assert norm > 0
    clipped = jax.tree.map(lambda g: np.asarray(g) * min(1.0, config.max_grad_norm / norm), grads)
    for old, new, g in zip(jax.tree.leaves(state.params), jax.tree.leaves(after.params), jax.tree.leaves(clipped),
                           strict=True):
        np.testing.assert_allclose(np.asarray(new) - np.asarray(old), -config.lr * g / (np.abs(g) + 1e-8),
                                   atol=config.lr * 2e-3)


def test_gradient_noise_experiment_measures_every_entry(lm_runs, tmp_path):
    from experiments import lm_noise

    root, _ = lm_runs
    lm = LMConfig(task="addition", num_layers=1, d_model=32, prompts_per_update=4, group_size=4,
                  train_pool=512, data_shards=1)
    args = lm_noise.Args(lm=lm, init=str(root / "grpo-sft"), algos=("sft", "grpo-shuffled:group_size=2"), batches=3,
                         out=str(tmp_path / "noise"))
    assert args.config("grpo-shuffled:group_size=2") == dataclasses.replace(lm, algo="grpo", shuffle_rewards=True,
                                                                          group_size=2)
    summary = lm_noise.main(args)
    assert [r["algo"] for r in summary["rows"]] == list(args.algos)
    assert all(row["batches"] == 3 and row["seconds_per_batch"] > 0 for row in summary["rows"])
    assert summary["rows"][0]["batch_noise"] > 0  # the warm start's answers still have a gradient
    assert "cosine_with_first" in summary["rows"][1] and "cosine_with_first" not in summary["rows"][0]
    assert json.loads((tmp_path / "noise" / "summary.json").read_text())["batches"] == 3
    assert parse_settings("grpo:group_size=2, lr=1e-4", "algos") == ("grpo", {"group_size": "2", "lr": "1e-4"})
    for entry in ("sft-shuffled", "grpo:nope=1", "grpo:group_size=", "grpo:group_size=two", "nope",
                  "grpo:lr=1,lr=2", "grpo:lr"):
        with pytest.raises(ConfigError, match="algos"):
            dataclasses.replace(args, algos=(entry,)).validate()
    with pytest.raises(ConfigError, match="batches"):
        dataclasses.replace(args, batches=1).validate()
    with pytest.raises(ConfigError, match="data_shards"):
        dataclasses.replace(args, algos=("grpo:data_shards=2",)).validate()


def test_sft_fits_the_answers():
    config = LMConfig(task="addition", algo="sft", num_layers=1, d_model=32, num_updates=30, lr=3e-3,
                      prompts_per_update=32, train_pool=1024)
    learner, _ = lm_learner.make_learner(config)
    hparams = default_hparams(config)
    state = learner.init(jax.random.PRNGKey(0), hparams)
    update = jax.jit(learner.update)
    losses = []
    for _ in range(config.num_updates):
        state, metrics = update(state, hparams)
        losses.append(float(metrics["total_loss"]))
    assert losses[-1] < 0.7 * losses[0], losses


def test_automatic_fields_resolve_to_the_devices_and_the_task():
    auto = LMConfig(data_shards=0, max_new_tokens=0, prompts_per_update=12)
    assert resolved(auto).data_shards == 4 and resolved(auto).max_new_tokens == 8  # gcd(8, 12)
    countdown = resolved(dataclasses.replace(auto, task="countdown"))
    assert countdown.data_shards == 4 and countdown.max_new_tokens == 16
    assert resolved(dataclasses.replace(auto, data_shards=2)).data_shards == 2


def test_bad_lm_flags_fail_before_compiling():
    from experiments.lm_rl import Args

    for changes, field in (({"algo": "nope"}, "algo"), ({"task": "nope"}, "task"), ({"group_size": 1}, "group_size"),
                           ({"kl_estimator": "k9"}, "kl_estimator"), ({"data_shards": 3}, "num_minibatches"),
                           ({"fsdp": True}, "fsdp"), ({"max_new_tokens": -1}, "max_new_tokens"),
                           ({"algo": "sft", "shuffle_rewards": True}, "shuffle_rewards"),
                           ({"advantages": "some"}, "advantages"), ({"algo": "dpo", "advantages": "positive"}, "advantages")):
        with pytest.raises(ConfigError, match=field):
            Args(lm=LMConfig(**changes)).validate()
    results = run_cli_cases(None, [["experiments.lm_rl", "--algo", "nope", "--out", "/tmp/never-written-lm"],
                                   ["experiments.lm_noise", "--init", "/nonexistent", "--out", "/tmp/never-written-lm"]])
    for result, field in zip(results, ("algo", "init"), strict=True):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and field in lines[0], result.stderr[-2000:]


def run_split(config: LMConfig, out, reward_fn=None, resume: bool = False):
    """One run of ``config`` through the core runner on its first ``config.data_shards`` devices."""
    from rl import runner

    learner, _ = lm_learner.make_learner(config, reward_fn=reward_fn)
    hparams = jax.tree.map(lambda x: np.asarray(x)[None], default_hparams(config))
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), 1))
    return runner.run(learner, keys, hparams, out, {}, progress=False, devices=jax.devices()[:config.data_shards],
                      chunk_updates=2, checkpoint_seconds=0, resume=resume)


@pytest.mark.parametrize(("algo", "fsdp"), [("grpo", True), ("sft", False)])
def test_batch_split_over_8_devices_trains_like_one_device(tmp_path, algo, fsdp):
    """data_shards=8: each of 8 (faked CPU) devices samples and scores its share of the prompts; with
    one minibatch per update a run matches one device to float tolerance. Plain data parallel keeps
    a whole copy of the state per device; with fsdp each device stores 1/8 of every parameter (and
    of the reference and Adam's moments) that 8 divides. GRPO runs with ``shuffle_rewards``, whose
    permutations must not depend on the split either."""
    def train(shards: int, resume: bool = False):
        config = LMConfig(task="addition", algo=algo, num_layers=1, d_model=32, num_updates=2, lr=3e-3,
                          prompts_per_update=8, group_size=4, max_new_tokens=6, kl_coef=0.05,
                          data_shards=shards, fsdp=fsdp and shards > 1, train_pool=256,
                          shuffle_rewards=algo == "grpo")
        reward = lambda indices, tokens: (tokens[:, 0] == tokens[:, 1]).astype(jnp.float32)  # noqa: E731
        return run_split(config, tmp_path / f"run{shards}", reward_fn=reward, resume=resume)

    one, eight = train(1), train(8)
    assert eight.num_devices == 8
    restored = train(8, resume=True)  # the checkpoint is read back with the same layout
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(eight.state), strict=True):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    split = 0
    for leaf in jax.tree.leaves((eight.state.params, eight.state.opt_state.mu)):
        dim = lm_learner.split_dim(leaf.shape[1:], 8) if fsdp else -1
        ordered = sorted(leaf.addressable_shards, key=lambda shard: shard.index[dim + 1].start or 0)
        shards = [np.asarray(shard.data) for shard in ordered]
        if dim < 0:
            assert len(shards) == 8 and all(np.array_equal(shards[0], s) for s in shards[1:])
        else:  # the run's 8 devices hold consecutive slices of the leaf
            split += 1
            assert all(s.shape[dim + 1] * 8 == leaf.shape[dim + 1] for s in shards)
            np.testing.assert_array_equal(np.concatenate(shards, axis=dim + 1), np.asarray(leaf))
    assert split > 0 if fsdp else split == 0
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(eight.state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    for name in ("total_loss", "episode_return", "entropy"):
        np.testing.assert_allclose(one.records[-1][name], eight.records[-1][name], rtol=2e-4, atol=1e-6)


def test_countdown_scored_in_python_splits_over_devices_like_one_device(tmp_path):
    """Countdown's verifier runs on the host inside the compiled update (``jax.pure_callback``); with
    the batch over 2 devices each device scores its share, and a run matches one device."""
    def train(shards: int):
        config = LMConfig(task="countdown", algo="grpo", num_layers=1, d_model=32, num_updates=2,
                          lr=3e-3, prompts_per_update=4, group_size=4, data_shards=shards, train_pool=64)
        return run_split(config, tmp_path / f"run{shards}")

    one, two = train(1), train(2)
    assert two.num_devices == 2
    for name in ("episode_return", "zero_adv_frac", "total_loss"):
        np.testing.assert_allclose(one.records[-1][name], two.records[-1][name], rtol=2e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(two.state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
