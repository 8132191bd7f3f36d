"""PSO tuner: argument checks, encoding of discrete hyperparameters, optimisation quality, resume, real search."""

import json
import os
import warnings

import keras
import keras_tuner
import numpy as np
import pytest

from keras_wtrain.tuning.pso import PSO
from keras_wtrain.tuning.pso_oracle import DEFAULT_COGNITIVE
from keras_wtrain.tuning.pso_oracle import DEFAULT_INERTIA
from keras_wtrain.tuning.pso_oracle import DEFAULT_MAX_VELOCITY
from keras_wtrain.tuning.pso_oracle import DEFAULT_SOCIAL
from keras_wtrain.tuning.pso_oracle import PSOOracle

CENTRE = np.array([1.5, -2.0, 0.7])


def _sphere(hp):
    x = np.array([hp.Float(f"x{i}", -5.0, 5.0) for i in range(3)])
    return float(np.sum((x - CENTRE) ** 2))


def _space():
    hps = keras_tuner.HyperParameters()
    for i in range(3):
        hps.Float(f"x{i}", -5.0, 5.0)
    return hps


class SpherePSO(PSO):
    """A real PSO tuner whose trial computes an analytic objective instead of training."""

    def run_trial(self, trial, *args, **kwargs):
        return _sphere(trial.hyperparameters)


class SphereRandom(keras_tuner.RandomSearch):
    def run_trial(self, trial, *args, **kwargs):
        return _sphere(trial.hyperparameters)


def _best_score(tuner):
    return tuner.oracle.get_best_trials()[0].score


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"swarm_size": 0}, ValueError, "swarm_size"),
        ({"swarm_size": 2.5}, TypeError, "swarm_size"),
        ({"swarm_size": True}, TypeError, "swarm_size"),
        ({"inertia": -0.1}, ValueError, "inertia"),
        ({"cognitive": float("nan")}, ValueError, "cognitive"),
        ({"social": "high"}, TypeError, "social"),
        ({"max_velocity": 0.0}, ValueError, "max_velocity"),
        ({"max_velocity": 1.5}, ValueError, "max_velocity"),
        ({"patience": 0}, ValueError, "patience"),
        ({"max_trials": 0}, ValueError, "max_trials"),
        ({"max_trials": 30.0}, TypeError, "max_trials"),
        ({"max_velocity": "fast"}, TypeError, "max_velocity"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_invalid_arguments_are_rejected_with_their_name(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):
        SpherePSO(directory=str(tmp_path), **kwargs)


def test_pso_beats_random_search_on_a_shifted_sphere(tmp_path):
    pso_scores, random_scores = [], []
    for seed in (1, 2, 3):
        pso = SpherePSO(
            max_trials=100,
            swarm_size=10,
            seed=seed,
            hyperparameters=_space(),
            directory=str(tmp_path),
            project_name=f"pso{seed}",
        )
        pso.search(verbose=0)
        rand = SphereRandom(
            max_trials=100, seed=seed, hyperparameters=_space(), directory=str(tmp_path), project_name=f"rs{seed}"
        )
        rand.search(verbose=0)
        assert len(pso.oracle.trials) == 100
        pso_scores.append(_best_score(pso))
        random_scores.append(_best_score(rand))
        # The best hyperparameters really give the reported objective.
        best = pso.get_best_hyperparameters()[0]
        x = np.array([best.get(f"x{i}") for i in range(3)])
        np.testing.assert_allclose(np.sum((x - CENTRE) ** 2), pso_scores[-1], rtol=1e-9)
        # Near the optimum: within 0.5 of the centre in every coordinate.
        assert np.max(np.abs(x - CENTRE)) < 0.5, (seed, x)
    # Measured (seeds 1-3): PSO 0.05-0.13, random search 1.6-3.3 with the same 100 trials.
    assert max(pso_scores) < 0.25, pso_scores
    assert np.mean(random_scores) > 5 * np.mean(pso_scores), (pso_scores, random_scores)


def test_swarm_state_follows_the_update_rule(tmp_path):
    """Personal/global bests match the trial history; positions stay in [0, 1]; velocities are clamped."""
    tuner = SpherePSO(
        max_trials=30, swarm_size=4, max_velocity=0.1, seed=7, hyperparameters=_space(), directory=str(tmp_path)
    )
    tuner.search(verbose=0)
    swarm = tuner.oracle.swarm
    trials = tuner.oracle.trials
    scores = [t.score for t in trials.values()]
    assert swarm["global_best_score"] == pytest.approx(min(scores))
    for index in range(4):
        own = [trials[tid].score for tid, rec in tuner.oracle._trial_particles.items() if rec["particle"] == index]
        assert len(own) in (7, 8)
        assert swarm["best_scores"][index] == pytest.approx(min(own))
        assert all(0.0 <= v <= 1.0 for v in swarm["positions"][index].values())
        assert all(abs(v) <= 0.1 + 1e-12 for v in swarm["velocities"][index].values())
    # Decoding the global-best position gives back the best trial's values (Float: linear map).
    best_values = tuner.get_best_hyperparameters()[0].values
    for name, prob in swarm["global_best_position"].items():
        assert best_values[name] == pytest.approx(-5.0 + 10.0 * prob)


def _replay_swarm(tuner):
    """Replays the PSO rule from the trial history alone; returns (recorded, expected) positions per trial.

    Initial placements and velocities are redrawn from the documented generator
    `default_rng([seed, n])`; later moves recompute `v <- w v + c1 r1 (p - x) + c2 r2 (g - x)`,
    the clamp and the boundary rule, with `p` and `g` taken from the scores of the trials before.
    """
    oracle = tuner.oracle
    size, names = oracle.swarm_size, [hp.name for hp in oracle.hyperparameters.space]
    order = sorted(oracle._trial_particles, key=int)
    recorded = [np.array([oracle._trial_particles[t]["position"][n] for n in names]) for t in order]
    scores = [oracle.trials[t].score for t in order]
    expected, velocities = [], []
    for n, trial_id in enumerate(order):
        assert oracle._trial_particles[trial_id]["particle"] == n % size
        rng = np.random.default_rng([oracle.seed, n])
        if n < size:  # random placement: position then velocity, per coordinate
            vmax = oracle.max_velocity
            draws = np.array([(rng.uniform(0.0, 1.0), rng.uniform(-vmax, vmax)) for _ in names])
            expected.append(draws[:, 0])
            velocities.append(draws[:, 1])
            continue
        x, v = recorded[n - size], velocities[n - size]
        own = range(n % size, n, size)
        p = recorded[min(own, key=lambda m: (scores[m], m))]
        g = recorded[min(range(n), key=lambda m: (scores[m], m))]
        new_x, new_v = np.empty_like(x), np.empty_like(v)
        for i in range(len(names)):
            r1, r2 = rng.uniform(0.0, 1.0, size=2)
            vi = DEFAULT_INERTIA * v[i] + DEFAULT_COGNITIVE * r1 * (p[i] - x[i]) + DEFAULT_SOCIAL * r2 * (g[i] - x[i])
            vi = min(max(vi, -oracle.max_velocity), oracle.max_velocity)
            xi = x[i] + vi
            if not 0.0 <= xi <= 1.0:
                xi, vi = min(max(xi, 0.0), 1.0), 0.0
            new_x[i], new_v[i] = xi, vi
        expected.append(new_x)
        velocities.append(new_v)
    return recorded, expected


def test_defaults_run_a_swarm_whose_moves_follow_the_update_rule(tmp_path):
    """With every budget argument left at its default, particles really move, by the PSO rule."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the default budget must not warn
        tuner = SpherePSO(seed=5, hyperparameters=_space(), directory=str(tmp_path))
    oracle = tuner.oracle
    assert (oracle.max_trials, oracle.swarm_size) == (30, 5)
    assert (oracle.inertia, oracle.cognitive, oracle.social, oracle.max_velocity) == (
        DEFAULT_INERTIA,
        DEFAULT_COGNITIVE,
        DEFAULT_SOCIAL,
        DEFAULT_MAX_VELOCITY,
    )
    tuner.search(verbose=0)
    assert len(oracle.trials) == 30 and oracle.swarm["num_moves"] == 30
    recorded, expected = _replay_swarm(tuner)
    for n in range(30):
        np.testing.assert_allclose(recorded[n], expected[n], rtol=0, atol=1e-12, err_msg=f"trial {n}")
    # Trials swarm_size + k moved their particle away from where it was first placed ...
    for n in range(5, 30):
        assert np.max(np.abs(recorded[n] - recorded[n % 5])) > 1e-3, n
    # ... and the moved trials found better values than the random placements.
    scores = [oracle.trials[t].score for t in sorted(oracle.trials, key=int)]
    assert min(scores[5:]) < min(scores[:5])
    # The decoded values are the ones the trials ran (Float: linear map of the position).
    for trial_id, record in oracle._trial_particles.items():
        values = oracle.trials[trial_id].hyperparameters.values
        for name, prob in record["position"].items():
            assert values[name] == pytest.approx(-5.0 + 10.0 * prob)


@pytest.mark.parametrize("max_trials, swarm_size", [(5, 5), (3, 10), (1, 1), (10, 10)])
def test_a_budget_of_one_iteration_warns_that_it_is_random_search(max_trials, swarm_size, tmp_path):
    with pytest.warns(UserWarning, match="random search") as record:
        SpherePSO(max_trials=max_trials, swarm_size=swarm_size, directory=str(tmp_path))
    assert record[0].filename == __file__  # points at the caller's line
    with pytest.warns(UserWarning, match="random search"):
        PSOOracle(max_trials=max_trials, swarm_size=swarm_size)


@pytest.mark.parametrize("kwargs", [{}, {"max_trials": 6}, {"max_trials": 11, "swarm_size": 10}, {"max_trials": None}])
def test_a_budget_with_moves_does_not_warn(kwargs, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SpherePSO(directory=str(tmp_path), **kwargs)
        PSOOracle(**kwargs)


def test_zero_coefficients_freeze_the_swarm(tmp_path):
    """With w = c1 = c2 = 0 every particle stays where it was first placed (an independent check of the rule)."""
    tuner = SpherePSO(
        max_trials=9,
        swarm_size=3,
        inertia=0.0,
        cognitive=0.0,
        social=0.0,
        seed=3,
        hyperparameters=_space(),
        directory=str(tmp_path),
    )
    tuner.search(verbose=0)
    # The frozen particles re-propose values already tried: each is re-placed at random, so no repeats ever run.
    values = [tuple(sorted(t.hyperparameters.values.items())) for t in tuner.oracle.trials.values()]
    assert len(set(values)) == len(values) == 9


class MixedPSO(PSO):
    """Int / Choice / Boolean / Float with a unique optimum at n=7, act='tanh', flag=True, lr=1e-3."""

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        n = hp.Int("n", 0, 20)
        act = hp.Choice("act", ["relu", "gelu", "tanh", "elu"])
        flag = hp.Boolean("flag")
        lr = hp.Float("lr", 1e-5, 1e-1, sampling="log")
        assert isinstance(n, int) and 0 <= n <= 20
        assert act in ("relu", "gelu", "tanh", "elu")
        assert isinstance(flag, bool)
        assert 1e-5 <= lr <= 1e-1
        return (n - 7) ** 2 + 3.0 * (act != "tanh") + 2.0 * (not flag) + abs(np.log10(lr) + 3.0)


def test_discrete_hyperparameters_are_searched_by_rounding_and_ranking(tmp_path):
    hps = keras_tuner.HyperParameters()
    hps.Int("n", 0, 20)
    hps.Choice("act", ["relu", "gelu", "tanh", "elu"])
    hps.Boolean("flag")
    hps.Float("lr", 1e-5, 1e-1, sampling="log")
    tuner = MixedPSO(max_trials=80, swarm_size=8, seed=5, hyperparameters=hps, directory=str(tmp_path))
    tuner.search(verbose=0)
    best = tuner.get_best_hyperparameters()[0]
    assert (best.get("n"), best.get("act"), best.get("flag")) == (7, "tanh", True)
    assert abs(np.log10(best.get("lr")) + 3.0) < 0.3
    # Encoding: bins of equal width in [0, 1] (the oracle's decoder, checked against the plain rule).
    oracle = tuner.oracle
    for prob in np.linspace(0.0, 1.0, 23):
        values = oracle._decode({"n": prob, "act": prob, "flag": prob, "lr": prob})
        assert values["n"] == min(int(prob * 21), 20)
        assert values["act"] == ["relu", "gelu", "tanh", "elu"][min(int(prob * 4), 3)]
        assert values["flag"] == (prob >= 0.5)
        assert values["lr"] == pytest.approx(1e-5 * 10 ** (4 * prob))


def test_exhausted_discrete_space_stops_the_search(tmp_path):
    class BoolOnly(PSO):
        def run_trial(self, trial, *args, **kwargs):
            return float(trial.hyperparameters.Boolean("b"))

    hps = keras_tuner.HyperParameters()
    hps.Boolean("b")
    tuner = BoolOnly(max_trials=10, swarm_size=3, seed=0, hyperparameters=hps, directory=str(tmp_path))
    tuner.search(verbose=0)
    assert len(tuner.oracle.trials) == 2
    assert tuner.get_best_hyperparameters()[0].get("b") is False


def test_patience_stops_a_stagnating_swarm(tmp_path):
    class Flat(PSO):
        def run_trial(self, trial, *args, **kwargs):
            trial.hyperparameters.Float("x", 0.0, 1.0)
            return 1.0  # never improves after the first trial

    hps = keras_tuner.HyperParameters()
    hps.Float("x", 0.0, 1.0)
    tuner = Flat(max_trials=100, swarm_size=4, patience=2, seed=0, hyperparameters=hps, directory=str(tmp_path))
    tuner.search(verbose=0)
    # Best found at trial 1; stops once 2 iterations (8 trials) passed without improvement.
    assert len(tuner.oracle.trials) == 9


def test_hyperparameters_declared_inside_the_trial_join_the_swarm(tmp_path):
    """No space given in advance: the first trial runs the defaults, later trials search every dimension."""
    tuner = SpherePSO(max_trials=40, swarm_size=5, seed=4, directory=str(tmp_path))
    tuner.search(verbose=0)
    first = tuner.oracle.trials[sorted(tuner.oracle.trials)[0]].hyperparameters.values
    assert first == {"x0": -5.0, "x1": -5.0, "x2": -5.0}
    assert sorted(tuner.oracle.swarm["global_best_position"]) == ["x0", "x1", "x2"]
    assert _best_score(tuner) < 3.0


class Interrupted(Exception):
    pass


class InterruptiblePSO(SpherePSO):
    stop_at = None

    def run_trial(self, trial, *args, **kwargs):
        if self.stop_at is not None and len(self.oracle.trials) == self.stop_at:
            raise keras_tuner.errors.FatalError("simulated crash")
        return super().run_trial(trial, *args, **kwargs)


def _history(tuner):
    return [
        (tid, tuple(sorted(t.hyperparameters.values.items())), t.score, t.status)
        for tid, t in sorted(tuner.oracle.trials.items())
    ]


def test_resume_after_interruption_continues_trials_and_swarm(tmp_path):
    common = dict(max_trials=24, swarm_size=5, seed=11, hyperparameters=_space(), project_name="p")
    reference = InterruptiblePSO(directory=str(tmp_path / "ref"), **common)
    reference.search(verbose=0)

    first = InterruptiblePSO(directory=str(tmp_path / "run"), **common)
    first.stop_at = 13
    with pytest.raises(keras_tuner.errors.FatalError):
        first.search(verbose=0)
    assert len(first.oracle.trials) == 13  # 12 done, the 13th crashed mid-trial
    with open(os.path.join(tmp_path, "run", "p", "oracle.json")) as handle:
        saved = json.load(handle)["pso"]
    assert saved["num_completed"] == 12 and saved["num_moves"] == 13

    resumed = InterruptiblePSO(directory=str(tmp_path / "run"), **common)  # overwrite=False by default
    assert resumed.oracle.swarm["num_completed"] == 12
    assert resumed.remaining_trials == 24 - 13
    resumed.search(verbose=0)
    assert len(resumed.oracle.trials) == 24
    assert all(t.status == "COMPLETED" for t in resumed.oracle.trials.values())
    # The interrupted-and-resumed search is the same search as the uninterrupted one.
    assert _history(resumed) == _history(reference)
    assert resumed.oracle.swarm == reference.oracle.swarm

    # Resuming with a different swarm size is refused with a clear message.
    with pytest.raises(ValueError, match="swarm_size"):
        InterruptiblePSO(directory=str(tmp_path / "run"), **{**common, "swarm_size": 6})


def test_maximised_objective_direction(tmp_path):
    class Peak(PSO):
        def run_trial(self, trial, *args, **kwargs):
            return {"score": -_sphere(trial.hyperparameters)}

    tuner = Peak(
        objective=keras_tuner.Objective("score", "max"),
        max_trials=60,
        swarm_size=6,
        seed=2,
        hyperparameters=_space(),
        directory=str(tmp_path),
    )
    tuner.search(verbose=0)
    assert tuner.oracle.get_best_trials()[0].score > -0.6
    assert tuner.oracle.swarm["global_best_score"] == pytest.approx(-tuner.oracle.get_best_trials()[0].score)


@pytest.mark.tensorflow_only
def test_real_search_on_mnist5k_and_rebuild(mnist5k, tmp_path):
    data = mnist5k
    x_train, y_train = data.x_train[:512], data.y_train[:512]
    x_val, y_val = data.x_val[:256], data.y_val[:256]

    def build(hp):
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    tuner = PSO(
        build,
        objective="val_accuracy",
        max_trials=4,
        swarm_size=2,  # two swarm iterations: the second moves both particles
        seed=0,
        directory=str(tmp_path),
        project_name="mnist",
    )
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=1, batch_size=64, verbose=0)
    assert len(tuner.oracle.trials) == 4
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    best_hp = tuner.get_best_hyperparameters()[0]
    assert best_hp.get("units") in (16, 32, 48, 64)
    model = tuner.hypermodel.build(best_hp)
    history = model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    assert accuracy > 0.6  # 10 classes: chance is 0.1
