"""`PSOOracle`: the particle swarm of `PSO` as a Keras Tuner oracle (positions, velocities, bests, budget).

The update rule, the encoding of hyperparameters into `[0, 1]` and the budget are explained in
`docs/tutorials/tuning.md`.
"""

import math
import os
import sys
import warnings

import keras_tuner
import numpy as np
from keras_tuner.engine.hyperparameters import Fixed
from keras_tuner.engine.hyperparameters import Float
from keras_tuner.engine.hyperparameters import HyperParameters
from keras_tuner.engine.trial import TrialStatus

from keras_wtrain._core import validation

__all__ = ["PSOOracle"]

# Defaults of the randomness study (SPEC §3): Clerc & Kennedy's constriction
# coefficients, velocities clamped to 20 % of each range.
DEFAULT_INERTIA = 0.7298
DEFAULT_COGNITIVE = 1.49618
DEFAULT_SOCIAL = 1.49618
DEFAULT_MAX_VELOCITY = 0.2
# Budget defaults: 6 swarm iterations of 5 particles (the study: 10 particles, up to 200 iterations, which is
# 2,000 trainings; see the `PSOOracle` docstring for why the defaults differ).
DEFAULT_SWARM_SIZE = 5
DEFAULT_MAX_TRIALS = 30
_BELOW_ONE = math.nextafter(1.0, 0.0)


def _outside_this_module():
    """The `stacklevel` of the first caller outside this package's files (the user's `PSO(...)` or
    `PSOOracle(...)` line; `PSO` lives next door, in `pso.py`)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == os.path.dirname(__file__):
        level, frame = level + 1, frame.f_back
    return level


def _warn_if_no_moves(max_trials, swarm_size):
    if max_trials is not None and max_trials <= swarm_size:
        warnings.warn(
            f"PSO: argument `max_trials`={max_trials} is <= `swarm_size`={swarm_size}: every trial only places a "
            "particle at random and no particle ever moves, so this search is random search. Give the swarm "
            f"several iterations, e.g. max_trials={5 * swarm_size} (5 x swarm_size), or use a smaller swarm_size.",
            UserWarning,
            stacklevel=_outside_this_module(),
        )


class PSOOracle(keras_tuner.Oracle):
    """Particle-swarm oracle for Keras Tuner (the search behind `PSO`; settings of arXiv:2404.03992).

    Trial `n` moves particle `n mod swarm_size`; the first `swarm_size` trials place the particles at random, later ones
    apply `v <- inertia v + cognitive r1 (p - x) + social r2 (g - x)`, clipped, `x <- x + v` on positions in `[0, 1]`.
    The swarm is saved in `oracle.json`, so a reloaded search continues exactly. Cost: O(swarm_size x hyperparameters)
    memory and time per trial, besides the trainings.

    Args:
        objective: a metric name, `keras_tuner.Objective` or list of them; optional when the trial returns a float.
        max_trials: maximum number of trials, or None (default 30: 6 iterations of 5 particles).
        swarm_size: number of particles (default 5; the study used 10).
        inertia: inertia weight `w` (default 0.7298).
        cognitive: pull `c1` towards the particle's own best (default 1.49618).
        social: pull `c2` towards the swarm's best (default 1.49618).
        max_velocity: velocity clamp as a fraction of each range, in `(0, 1]` (default 0.2).
        patience: stop after this many swarm iterations without improvement; None (default) runs to `max_trials`.
        seed: random seed.
        hyperparameters: optional `keras_tuner.HyperParameters` registering the search space in advance.
        allow_new_entries: whether the hypermodel may request hyperparameters not in `hyperparameters`.
        tune_new_entries: whether such new hyperparameters are searched.
        max_retries_per_trial: retries of a crashed trial.
        max_consecutive_failed_trials: stop after this many failed trials in a row.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for `swarm_size`, `max_trials` or `patience` < 1, a negative or non-finite
            `inertia`/`cognitive`/`social`, or `max_velocity` outside `(0, 1]`.

    Warns:
        UserWarning: if `max_trials <= swarm_size` (the search is then random search).

    Example:

    ```python
    import keras_tuner
    from keras_wtrain.tuning.pso_oracle import PSOOracle

    oracle = PSOOracle(objective=keras_tuner.Objective("loss", "min"), seed=0)
    print(oracle.max_trials, oracle.swarm_size)  # 30 5: six swarm iterations
    ```
    """

    _paper_arxiv = "2404.03992"

    def __init__(
        self,
        objective=None,
        max_trials=DEFAULT_MAX_TRIALS,
        swarm_size=DEFAULT_SWARM_SIZE,
        inertia=DEFAULT_INERTIA,
        cognitive=DEFAULT_COGNITIVE,
        social=DEFAULT_SOCIAL,
        max_velocity=DEFAULT_MAX_VELOCITY,
        patience=None,
        seed=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        max_trials = validation.check_int("max_trials", max_trials, minimum=1, allow_none=True)
        self.swarm_size = validation.check_int("swarm_size", swarm_size, minimum=1)
        _warn_if_no_moves(max_trials, self.swarm_size)
        self.inertia = validation.check_nonnegative("inertia", inertia)
        self.cognitive = validation.check_nonnegative("cognitive", cognitive)
        self.social = validation.check_nonnegative("social", social)
        max_velocity = validation.check_nonnegative("max_velocity", max_velocity)
        if not 0.0 < max_velocity <= 1.0:
            raise ValueError(
                f"argument `max_velocity` must be in (0, 1] (a fraction of each range); received {max_velocity!r}."
            )
        self.max_velocity = max_velocity
        self.patience = validation.check_int("patience", patience, minimum=1, allow_none=True)
        seed = validation.check_int("seed", seed, minimum=0, allow_none=True)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if seed is not None:  # the base class replaces a seed of 0 by a random one
            self.seed = self._seed_state = seed
        self._reset_swarm()

    # ------------------------------------------------------------------ state
    def _reset_swarm(self):
        self._positions = [None] * self.swarm_size  # dict name -> coordinate in [0, 1]
        self._velocities = [None] * self.swarm_size
        self._best_positions = [None] * self.swarm_size
        self._best_scores = [None] * self.swarm_size  # minimisation sign
        self._global_best_position = None
        self._global_best_score = None
        self._trial_particles = {}  # trial_id -> {"particle": i, "position": dict}
        self._num_moves = 0
        self._num_completed = 0
        self._last_improvement = 0

    @property
    def swarm(self):
        """A copy of the swarm: positions, velocities, personal and global bests (scores in minimisation sign).

        Returns:
            A dict of plain Python values.

        Example:

        ```python
        from keras_wtrain.tuning.pso_oracle import PSOOracle

        PSOOracle(max_trials=5, swarm_size=2).swarm["global_best_score"]  # None before any trial
        ```
        """
        return {
            "positions": [dict(p) if p is not None else None for p in self._positions],
            "velocities": [dict(v) if v is not None else None for v in self._velocities],
            "best_positions": [dict(p) if p is not None else None for p in self._best_positions],
            "best_scores": list(self._best_scores),
            "global_best_position": dict(self._global_best_position) if self._global_best_position else None,
            "global_best_score": self._global_best_score,
            "num_moves": self._num_moves,
            "num_completed": self._num_completed,
        }

    def get_state(self):
        state = super().get_state()
        state["pso"] = {
            "swarm_size": self.swarm_size,
            "positions": self._positions,
            "velocities": self._velocities,
            "best_positions": self._best_positions,
            "best_scores": self._best_scores,
            "global_best_position": self._global_best_position,
            "global_best_score": self._global_best_score,
            "trial_particles": self._trial_particles,
            "num_moves": self._num_moves,
            "num_completed": self._num_completed,
            "last_improvement": self._last_improvement,
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        pso = state["pso"]
        if pso["swarm_size"] != self.swarm_size:
            raise ValueError(
                f"PSO: the saved search used swarm_size={pso['swarm_size']}, this oracle has "
                f"argument `swarm_size`={self.swarm_size}; use the same value to resume or pass overwrite=True."
            )
        self._positions = pso["positions"]
        self._velocities = pso["velocities"]
        self._best_positions = pso["best_positions"]
        self._best_scores = pso["best_scores"]
        self._global_best_position = pso["global_best_position"]
        self._global_best_score = pso["global_best_score"]
        self._trial_particles = pso["trial_particles"]
        self._num_moves = pso["num_moves"]
        self._num_completed = pso["num_completed"]
        self._last_improvement = pso["last_improvement"]

    # --------------------------------------------------------------- encoding
    def _nonfixed_space(self):
        return [hp for hp in self.hyperparameters.space if not isinstance(hp, Fixed)]

    def _decode(self, position):
        """Maps a position (dict name -> [0, 1]) to hyperparameter values (active ones only)."""
        hps = HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if isinstance(hp, Fixed):
                value = hp.value
            else:
                prob = min(max(float(position[hp.name]), 0.0), 1.0)
                if not isinstance(hp, Float):
                    prob = min(prob, _BELOW_ONE)  # Int/Choice bins are [a, b): 1.0 would fall off the end
                value = hp.prob_to_value(prob)
                if isinstance(value, (np.floating, np.integer)):
                    value = value.item()
            if hps.is_active(hp):
                hps.values[hp.name] = value
        return hps.values

    def _encode_trial(self, trial):
        """The position a finished trial really evaluated (proposal, else its values)."""
        proposed = self._trial_particles[trial.trial_id]["position"]
        position = {}
        values = trial.hyperparameters.values
        for hp in self._nonfixed_space():
            if hp.name in proposed:
                position[hp.name] = proposed[hp.name]
            else:  # the hyperparameter appeared during the trial: it ran at its value or default
                value = values.get(hp.name, hp.default)
                try:
                    position[hp.name] = float(min(max(hp.value_to_prob(value), 0.0), 1.0))
                except (ValueError, TypeError, ZeroDivisionError):
                    continue
        return position

    # --------------------------------------------------------------- movement
    def _random_particle(self, rng):
        position, velocity = {}, {}
        for hp in self._nonfixed_space():
            position[hp.name] = float(rng.uniform(0.0, 1.0))
            velocity[hp.name] = float(rng.uniform(-self.max_velocity, self.max_velocity))
        return position, velocity

    def _move(self, index, rng):
        position = dict(self._positions[index])
        velocity = dict(self._velocities[index])
        own_best = self._best_positions[index] or {}
        swarm_best = self._global_best_position or {}
        for hp in self._nonfixed_space():
            name = hp.name
            if name not in position:  # a new hyperparameter: random coordinate, random velocity
                position[name] = float(rng.uniform(0.0, 1.0))
                velocity[name] = float(rng.uniform(-self.max_velocity, self.max_velocity))
                continue
            x = position[name]
            r1, r2 = rng.uniform(0.0, 1.0, size=2)
            v = (
                self.inertia * velocity.get(name, 0.0)
                + self.cognitive * r1 * (own_best.get(name, x) - x)
                + self.social * r2 * (swarm_best.get(name, x) - x)
            )
            v = min(max(v, -self.max_velocity), self.max_velocity)
            x = x + v
            if x < 0.0 or x > 1.0:
                x, v = min(max(x, 0.0), 1.0), 0.0
            position[name], velocity[name] = float(x), float(v)
        return position, velocity

    def _stagnated(self):
        if self.patience is None or self._num_completed < self.swarm_size:
            return False
        return self._num_completed - self._last_improvement >= self.patience * self.swarm_size

    def populate_space(self, trial_id):
        """Moves the next particle and returns its hyperparameter values.

        Args:
            trial_id: the id of the trial being created.

        Returns:
            `{"status": "RUNNING", "values": {...}}`, or `{"status": "STOPPED", "values": None}` when the swarm
            stagnated (`patience`) or the space is exhausted.
        """
        if self._stagnated():
            return {"status": TrialStatus.STOPPED, "values": None}
        index = self._num_moves % self.swarm_size
        rng = np.random.default_rng([int(self.seed), self._num_moves])
        if self._positions[index] is None:
            position, velocity = self._random_particle(rng)
        else:
            position, velocity = self._move(index, rng)
        values = self._decode(position)
        collisions = 0
        while self._duplicate(values):
            collisions += 1
            if collisions > self._max_collisions:
                return {"status": TrialStatus.STOPPED, "values": None}
            position, velocity = self._random_particle(rng)
            values = self._decode(position)
        self._positions[index] = position
        self._velocities[index] = velocity
        self._trial_particles[trial_id] = {"particle": index, "position": dict(position)}
        self._num_moves += 1
        return {"status": TrialStatus.RUNNING, "values": values}

    @keras_tuner.synchronized
    def end_trial(self, trial):
        """Records a finished trial and updates the particle's and the swarm's bests.

        Args:
            trial: the finished `keras_tuner.engine.trial.Trial`.
        """
        super().end_trial(trial)
        trial = self.trials[trial.trial_id]
        if trial.trial_id not in self._trial_particles or trial.status != TrialStatus.COMPLETED:
            return
        score = trial.score
        if score is None or not math.isfinite(score):
            return
        score = float(score) if self.objective.direction == "min" else -float(score)
        index = self._trial_particles[trial.trial_id]["particle"]
        position = self._encode_trial(trial)
        self._num_completed += 1
        if self._best_scores[index] is None or score < self._best_scores[index]:
            self._best_scores[index] = score
            self._best_positions[index] = position
        if self._global_best_score is None or score < self._global_best_score:
            self._global_best_score = score
            self._global_best_position = dict(position)
            self._last_improvement = self._num_completed
        self.save()
