"""`PSO`: particle-swarm optimisation as a Keras Tuner `Tuner` (the search of arXiv:2404.03992), over `PSOOracle`."""

import keras_tuner

from keras_wtrain.tuning.pso_oracle import DEFAULT_COGNITIVE
from keras_wtrain.tuning.pso_oracle import DEFAULT_INERTIA
from keras_wtrain.tuning.pso_oracle import DEFAULT_MAX_TRIALS
from keras_wtrain.tuning.pso_oracle import DEFAULT_MAX_VELOCITY
from keras_wtrain.tuning.pso_oracle import DEFAULT_SOCIAL
from keras_wtrain.tuning.pso_oracle import DEFAULT_SWARM_SIZE
from keras_wtrain.tuning.pso_oracle import PSOOracle

__all__ = ["PSO", "PSOOracle"]


class PSO(keras_tuner.Tuner):
    """Particle-swarm optimisation tuner for Keras Tuner (used in arXiv:2404.03992).

    A drop-in alternative to `keras_tuner.RandomSearch` whose trials are chosen by `PSOOracle`; the swarm settings
    default to the study's. A search resumes from `directory/project_name` with `overwrite=False`. Cost: one training
    per trial; the swarm itself is a few floats per particle and hyperparameter.

    Args:
        hypermodel: a `keras_tuner.HyperModel` (e.g. `keras_wtrain.tuning.spaces.HyperModel`) or a function
            `build(hp)`; optional when `run_trial` is overridden.
        objective: metric to optimise (e.g. `"val_accuracy"`); optional when the trial returns a float to minimise.
        max_trials: total number of trials, default 30, or None; keep it several times `swarm_size`.
        swarm_size: number of particles, default 5.
        inertia: inertia weight, >= 0.
        cognitive: pull towards each particle's own best, >= 0.
        social: pull towards the swarm's best, >= 0.
        max_velocity: velocity clamp, a fraction of each range in `(0, 1]`.
        patience: stop after this many swarm iterations without improvement (None: never).
        seed: random seed.
        hyperparameters: optional `keras_tuner.HyperParameters` registered in advance.
        tune_new_entries: whether new hyperparameters requested by the hypermodel are searched.
        allow_new_entries: whether the hypermodel may request new entries.
        max_retries_per_trial: retries of a crashed trial.
        max_consecutive_failed_trials: stop after this many failures in a row.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`, `overwrite`, ...).

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an argument out of range (see `PSOOracle`).

    Warns:
        UserWarning: if `max_trials <= swarm_size` (the search is then random search).

    Example:

    ```python
    import tempfile

    from keras_wtrain.tuning.pso import PSO

    class Sphere(PSO):
        def run_trial(self, trial, *args, **kwargs):
            return (trial.hyperparameters.Float("x", -5.0, 5.0) - 1.0) ** 2  # minimised

    tuner = Sphere(seed=0, directory=tempfile.mkdtemp(), overwrite=True)
    tuner.search(verbose=0)
    print(tuner.get_best_hyperparameters()[0].get("x"))  # 0.86 (the minimum is at 1.0)
    ```
    """

    _paper_arxiv = "2404.03992"

    def __init__(
        self,
        hypermodel=None,
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
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **kwargs,
    ):
        self.seed = seed
        oracle = PSOOracle(
            objective=objective,
            max_trials=max_trials,
            swarm_size=swarm_size,
            inertia=inertia,
            cognitive=cognitive,
            social=social,
            max_velocity=max_velocity,
            patience=patience,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # keras-tuner 1.4.8 imports `tensorboard` for every trial under the TensorFlow backend, but
        # TensorFlow >= 2.20 no longer installs it; it is only needed when a TensorBoard callback is passed.
        if not any(callback.__class__.__name__ == "TensorBoard" for callback in callbacks):
            return
        super()._configure_tensorboard_dir(callbacks, trial, execution)
