"""The matrix-game suite, its closed-form metrics (checked against nashpy), the self-play learners
(fictitious play, Hedge, SPPO) and experiments.matrix_games."""

import itertools
import json
import sys

import jax
import jax.numpy as jnp
import nashpy
import numpy as np
import pytest
from conftest import run_cli_cases

from experiments import matrix_games
from experiments.common import cli
from rl.errors import ConfigError
from rl.games import learners
from rl.games.matrix import GAMES, equilibria_2x2, exploitability, get_game, group, is_zero_sum, nash_conv
from rl.games.preference import check_preference, preference_from_zero_sum, von_neumann_winner

RPS = GAMES["rock_paper_scissors"].payoffs
RPS_FAMILY = np.stack([GAMES[n].payoffs for n in
                       ("rock_paper_scissors", "biased_rock_paper_scissors", "weighted_rock_paper_scissors")])
RPS_NASH = [np.ones(3) / 3, np.array([1, 2, 1]) / 4, np.array([3, 2, 1]) / 6]
WINNER = np.array([1 / 2, 1 / 3, 1 / 6, 0])  # von Neumann winner of intransitive_preference, by hand
PREF = (1 + GAMES["intransitive_preference"].payoffs[0]) / 2


def test_closed_form_metrics_on_hand_solved_games():
    u, rock = np.ones(3) / 3, np.eye(3)[0]
    assert exploitability(RPS, u, u) == pytest.approx(0, abs=1e-12)
    assert nash_conv(RPS, rock, rock) == pytest.approx(2)  # each player gains 1 by switching to paper
    assert exploitability(RPS, rock, rock) == pytest.approx(1)
    assert nash_conv(RPS, rock, u) == pytest.approx(1)  # only the column player gains: paper beats rock
    for payoffs, x in zip(RPS_FAMILY, RPS_NASH, strict=True):
        assert exploitability(payoffs, x, x) == pytest.approx(0, abs=1e-12)
    mp, heads = GAMES["matching_pennies"].payoffs, np.eye(2)[0]
    assert exploitability(mp, np.ones(2) / 2, np.ones(2) / 2) == pytest.approx(0)
    assert nash_conv(mp, heads, heads) == pytest.approx(2)  # the matched column player loses 1, could win 1
    pd, (c, d) = GAMES["prisoners_dilemma"].payoffs, np.eye(2)
    assert pd.tolist() == [[[3, 1], [4, 2]], [[3, 4], [1, 2]]]
    assert nash_conv(pd, d, d) == 0 and nash_conv(pd, c, c) == pytest.approx(2)  # T - R = 1 for each player
    (eq,) = equilibria_2x2(pd)
    np.testing.assert_array_equal(np.concatenate(eq), [0, 1, 0, 1])
    assert [tuple(np.concatenate(e)) for e in equilibria_2x2(GAMES["chicken"].payoffs)] == [
        (0, 1, 1, 0), (0.5, 0.5, 0.5, 0.5), (1, 0, 0, 1)]
    # jit + vmap over the suite agrees with the float64 numpy path
    suite = np.stack([g.payoffs for g in group("2x2")])
    x, y = np.random.default_rng(1).dirichlet(np.ones(2), (2, len(suite)))
    batched = jax.jit(jax.vmap(nash_conv))(jnp.asarray(suite), jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(batched, nash_conv(suite, x, y), atol=1e-5)


def _canonical(a: np.ndarray, b: np.ndarray, player_swap: bool) -> tuple:
    """The smallest form of (A, B) under row swaps, column swaps (and exchanging the players)."""
    forms = [(a, b)] + ([(b.T, a.T)] if player_swap else [])
    return min(tuple(p[r][:, c].ravel()) + tuple(q[r][:, c].ravel())
               for p, q in forms for r in ([0, 1], [1, 0]) for c in ([0, 1], [1, 0]))


def test_suite_has_the_144_ordinal_classes_once_each():
    suite = group("2x2")
    assert len(suite) == 144 and len({g.name for g in suite}) == 144
    assert [g.index for g in suite] == list(range(1, 145)) and get_game("rg_001") is GAMES["prisoners_dilemma"]
    all_games = [(np.array(a).reshape(2, 2), np.array(b).reshape(2, 2))
                 for a, b in itertools.product(itertools.permutations(range(1, 5)), repeat=2)]
    assert len(all_games) == 576
    classes = {_canonical(a, b, False) for a, b in all_games}
    assert len(classes) == 144 and len({_canonical(a, b, True) for a, b in all_games}) == 78
    assert {_canonical(*g.payoffs, False) for g in suite} == classes
    symmetric = [g.name for g in suite if np.array_equal(g.payoffs[1], g.payoffs[0].T)]
    assert len(symmetric) == 12 and {"prisoners_dilemma", "chicken", "stag_hunt", "deadlock"} <= set(symmetric)
    for g in suite:  # orientation: row player's 4 in the left column, column player's 4 in the top row
        assert 4 in g.payoffs[0][:, 0] and 4 in g.payoffs[1][0]


def test_nash_conv_and_exploitability_agree_with_nashpy_on_every_game():
    rng = np.random.default_rng(0)
    for game in GAMES.values():
        a, b = game.payoffs
        ref = nashpy.Game(a, b)
        rows, cols = np.eye(a.shape[0]), np.eye(a.shape[1])
        for _ in range(3):
            x, y = rng.dirichlet(np.ones(a.shape[0])), rng.dirichlet(np.ones(a.shape[1]))
            u_row, u_col = ref[x, y]
            expected = max(ref[e, y][0] for e in rows) - u_row + max(ref[x, e][1] for e in cols) - u_col
            assert abs(nash_conv(game.payoffs, x, y) - expected) <= 1e-6, game.name
            if is_zero_sum(game.payoffs):
                assert abs(exploitability(game.payoffs, x, y) - expected / 2) <= 1e-6, game.name
        if game.name in ("rock_paper_scissors", "weighted_rock_paper_scissors", "intransitive_preference"):
            for x, y in ref.support_enumeration():
                assert exploitability(game.payoffs, x, y) <= 1e-9


def _as_set(equilibria) -> set:
    return {tuple(np.round(np.concatenate(e), 9)) for e in equilibria}


def test_2x2_equilibria_agree_with_nashpy():
    for game in [*group("2x2"), GAMES["matching_pennies"]]:
        ours = equilibria_2x2(game.payoffs)
        ref = nashpy.Game(*game.payoffs)
        assert _as_set(ours) == _as_set(ref.support_enumeration()) == _as_set(ref.vertex_enumeration()), game.name
        assert all(nash_conv(game.payoffs, x, y) <= 1e-12 for x, y in ours)
    with pytest.raises(ValueError, match="degenerate"):
        equilibria_2x2(np.zeros((2, 2, 2)))


def test_repeated_games_in_closed_form():
    game = GAMES["iterated_prisoners_dilemma"]
    a, labels = game.payoffs[0], game.row_actions
    tft, alld, allc = (labels.index(s) for s in ("C|CDCD", "D|DDDD", "C|CCCC"))
    assert len(labels) == 32 and np.allclose(game.payoffs[1], a.T)
    assert a[tft, tft] == pytest.approx(3) and a[alld, allc] == pytest.approx(5)
    assert a[tft, alld] == pytest.approx(0.9)  # sucker once (0), then mutual defection (1): 0.9
    assert a[alld, tft] == pytest.approx(0.1 * 5 + 0.9)


def test_fictitious_play_and_hedge_reach_rps_exploitability():
    init = tuple(np.random.default_rng(0).dirichlet(np.ones(3), (2, 3)))  # random (non-equilibrium) start
    for run in (learners.fictitious_play(RPS_FAMILY, 20_000, 20, initial=init),
                learners.hedge(RPS_FAMILY, 20_000, num_records=20, initial=init)):
        exploit = np.asarray(run.nash_conv_average[:, -1]) / 2
        assert exploit[0] <= 0.01 and np.all(exploit <= 0.02), exploit  # RPS; its biased variants (range 4, 6)
        assert np.all(np.asarray(run.nash_conv_last[:, -1]) / 2 > 0.1)  # the last iterates cycle
        assert run.iterations[-1] == 20_000 and run.nash_conv_average.shape == (3, len(run.iterations))
    uniform = learners.fictitious_play(RPS_FAMILY[:1], 5_000, 20)  # the default, uniform start
    assert float(uniform.nash_conv_average[0, -1]) / 2 <= 0.01


def test_sppo_rewards_and_loss_by_hand():
    p = np.array([[0.5, 0.8, 0.3], [0.2, 0.5, 0.6], [0.7, 0.4, 0.5]])
    samples = jnp.array([0, 0, 2])
    rewards = learners.sppo_rewards(p, samples)
    np.testing.assert_allclose(rewards, [1.3 / 3, 1.3 / 3, 1.9 / 3], rtol=1e-6)  # itself included as 1/2
    logits = jnp.zeros(3)
    loss = learners.sppo_loss(logits, logits, samples, rewards, 1.0)
    assert float(loss) == pytest.approx((2 * (1.3 / 3 - 0.5) ** 2 + (1.9 / 3 - 0.5) ** 2) / 3, rel=1e-5)


def test_sppo_converges_to_the_von_neumann_winner():
    np.testing.assert_allclose(von_neumann_winner(PREF), WINNER, atol=1e-7)
    np.testing.assert_allclose(von_neumann_winner(preference_from_zero_sum(RPS[0])[0]), np.ones(3) / 3, atol=1e-7)
    exact = learners.sppo_exact(PREF[None], 3_000, eta=0.5, num_records=20)
    assert np.abs(np.asarray(exact.average_row[0]) - WINNER).sum() <= 0.05
    sampled = learners.sppo_sampled(np.stack([PREF, PREF]), 10_000, jax.random.PRNGKey(0), num_records=20)
    l1_average = np.abs(np.asarray(sampled.average_row) - WINNER).sum(-1)
    l1_last = np.abs(np.asarray(sampled.last_row) - WINNER).sum(-1)
    assert np.all(l1_average <= 0.05), (l1_average, l1_last)  # the average iterate; the last one cycles


def test_preference_matrices_are_validated():
    with pytest.raises(ConfigError, match=r"must be square \(n x n\), got shape \(2, 3\)"):
        check_preference(np.full((2, 3), 0.5))
    with pytest.raises(ConfigError, match=r"P\[0,1\] \+ P\[1,0\] = 1.4, must be 1"):
        check_preference([[0.5, 0.7], [0.7, 0.5]])
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        check_preference([[0.5, 1.5], [-0.5, 0.5]])
    with pytest.raises(ConfigError, match="at least 2 options"):
        check_preference([[0.5]])
    with pytest.raises(ConfigError, match="at least 2 samples"):
        learners.sppo_sampled(PREF[None], 10, jax.random.PRNGKey(0), num_samples=1)


def test_cli_runs_and_writes_the_contract(tmp_path):
    summary = matrix_games.main(matrix_games.Args(game="symmetric_zero_sum", learner="sppo", iterations=50,
                                                  num_records=20, out=str(tmp_path / "sppo")))
    saved = json.loads((tmp_path / "sppo" / "summary.json").read_text())
    assert saved["games"].keys() == summary["games"].keys() == {
        "rock_paper_scissors", "biased_rock_paper_scissors", "weighted_rock_paper_scissors", "intransitive_preference"}
    rps = saved["games"]["rock_paper_scissors"]
    assert set(rps["exploitability"]) == {"average", "last"} and np.array(rps["payoffs"]).shape == (2, 3, 3)
    assert np.array(rps["average_policy"]).shape == np.array(rps["last_policy"]).shape == (2, 3)
    for name in ("table.md", "curves.png", "curves.npz"):
        assert (tmp_path / "sppo" / name).stat().st_size > 0
    mixed = matrix_games.main(matrix_games.Args(game="zero_sum", learner="sppo", iterations=50, num_records=20,
                                                out=str(tmp_path / "skips")))
    assert "SPPO plays symmetric zero-sum" in mixed["skipped"]["matching_pennies"]
    pd = matrix_games.main(matrix_games.Args(game="rg_001", learner="hedge", iterations=50, num_records=20,
                                             out=str(tmp_path / "pd")))
    assert pd["games"]["prisoners_dilemma"]["nash_conv"]["last"] < 0.05 and "exploitability" not in pd["games"][
        "prisoners_dilemma"]


@pytest.mark.parametrize("argv, message", [
    (["--game", "nope"], "error: game: unknown game 'nope'"),
    (["--learner", "sarsa"], "error: learner: unknown learner 'sarsa'; choose from fictitious, hedge, ppo, sppo"),
    (["--learner", "ppo", "--ppo-ent-coef", "-1"], "error: ent_coef: must be finite and >= 0.0, got -1.0"),
    (["--learner", "sppo", "--preferences", "0.5,0.5,0.5;0.5,0.5,0.5"], "must be square (n x n), got shape (2, 3)"),
    (["--learner", "sppo", "--preferences", "0.5,0.4;0.5"], "must be square (n x n)"),
    (["--learner", "sppo", "--num-samples", "1"], "error: num_samples: SPPO needs at least 2 samples"),
])
def test_bad_input_gives_one_line_and_exit_2(argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["matrix_games", *argv, "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_info:
        cli(matrix_games.main, matrix_games.Args, "")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_bad_input_through_the_cli(tmp_path):
    [result] = run_cli_cases("experiments.matrix_games", [["--game", "nope", "--learner", "hedge", "--out",
                                                          str(tmp_path / "x")]])
    assert result.returncode == 2 and result.stderr.startswith("error: game: unknown game 'nope'")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x").exists()


def test_ppo_self_play_binds_the_policy_itself_as_opponent():
    """The row player's payoff is 1 exactly when the column player plays action 0, whatever the row
    plays: the first rollout's mean reward of the row seat is the policy's own probability of
    action 0 at the column seat, which the core learner binds into the env params."""
    from rl import envs
    from rl.games.ppo_selfplay import self_play_config
    from rl.ppo import default_hparams, make_learner, make_policy

    config = self_play_config(2, 1, num_envs=4096, num_steps=1, num_minibatches=1)
    learner = make_learner(config)
    env, params = envs.make(config.env)
    game = np.zeros((2, 2, 2), np.float32)
    game[0, :, 0] = 1.0
    hp = default_hparams(config, env_params=params.replace(payoffs=jnp.asarray(game)))
    state = learner.init(jax.random.PRNGKey(3), hp)
    policy = make_policy(config, env, params)
    probs = policy.probs(state.params, jnp.eye(2))
    state_after, metrics = learner.update(state, hp)
    row_seat = np.asarray(state.env_state.env_state.seat) == 0  # seats of the rollout's one step
    # episode_return averages both seats; the column seat earns 0, so rescale by the row share
    row_share = row_seat.mean()
    assert float(metrics["episode_return"]) / row_share == pytest.approx(float(probs[1, 0]), abs=0.03)


def test_ppo_self_play_reaches_low_exploitability_on_rock_paper_scissors():
    from rl.games.ppo_selfplay import ppo_self_play

    result = ppo_self_play(RPS[None], 800, jax.random.PRNGKey(0)[None], num_records=10)
    average = exploitability(RPS, np.asarray(result.average_row[0]), np.asarray(result.average_col[0]))
    assert average <= 0.02
    assert float(result.nash_conv_average[0, -1]) / 2 == pytest.approx(average, abs=1e-6)


def test_ppo_self_play_keeps_a_pool_of_past_snapshots_in_the_train_state():
    from rl import envs
    from rl.games.ppo_selfplay import self_play_config
    from rl.ppo import default_hparams, make_learner

    config = self_play_config(3, 3, num_envs=8, num_steps=2, num_minibatches=2, opponent_pool=2, pool_interval=1)
    learner = make_learner(config)
    params = envs.make(config.env)[1].replace(payoffs=jnp.asarray(np.stack([RPS[0], RPS[1]]), jnp.float32))
    hp = default_hparams(config, env_params=params)
    state = learner.init(jax.random.PRNGKey(0), hp)
    snapshots = []
    for _ in range(3):
        state, metrics = learner.update(state, hp)
        snapshots.append(state.params)
        assert np.isfinite(float(metrics["total_loss"]))
    assert int(state.opponents.count) == 3
    # ring buffer of 2: slot 0 holds the third snapshot, slot 1 the second
    for slot, snapshot in ((0, snapshots[2]), (1, snapshots[1])):
        jax.tree.map(lambda pool, p, s=slot: np.testing.assert_array_equal(pool[s], p), state.opponents.params, snapshot)


def test_plot_runs_overlays_learners_and_tabulates_games(tmp_path):
    from experiments import plot_runs

    runs = []
    for learner in ("fictitious", "hedge"):
        matrix_games.main(matrix_games.Args(game="rock_paper_scissors", learner=learner, iterations=50, num_records=10,
                                            out=str(tmp_path / learner)))
        runs.append(str(tmp_path / learner))
    plot_runs.main(plot_runs.Args(runs=tuple(runs), out=str(tmp_path / "rps.png"), table=str(tmp_path / "t.md")))
    assert (tmp_path / "rps.png").stat().st_size > 0
    table = (tmp_path / "t.md").read_text().splitlines()
    assert table[0] == "| game | metric | fictitious: average / last | hedge: average / last |"
    assert table[2].startswith("| rock_paper_scissors | exploitability |")
