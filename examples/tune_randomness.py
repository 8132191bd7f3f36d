"""Particle-swarm search over loss noise and gradient dropout on MNIST-5k.

The randomness study (Altarabichi et al., arXiv:2404.03992) tuned how much
randomness to inject with particle-swarm optimisation; this script does the
same for two of its techniques with `keras_wtrain.tuning`: the loss-noise
standard deviation σ in [0, 1] and the gradient-dropout rate p in [0, 0.5].

Run: `python examples/tune_randomness.py` (set KERAS_WTRAIN_TINY=1 for a run of a few seconds).
"""

import os

import keras
import keras_tuner

from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.comparison.models import build_model
from keras_wtrain.tuning.pso import PSO
from keras_wtrain.tuning.spaces import HyperModel


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=256 if tiny else None)
    keras.utils.set_random_seed(0)

    # 1. The user's model, as a function of the trial's hyperparameters. It may also take `wrap=`
    #    (a function applied to each Dense/Conv layer), which weight normalization and shadow weights need.
    def build(hp):
        model = build_model("mlp", (28, 28, 1), data.num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    # 2. Add the searched techniques: σ ~ [0, 1] and p ~ [0, 0.5], the study's ranges. Hyperparameters
    #    registered in advance override the defaults: here σ stays constant instead of also searching
    #    its schedule ("constant" or "linear_decay").
    hypermodel = HyperModel(build, techniques=("loss-noise", "grad-dropout"))
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("loss_noise_schedule", "constant")

    # 3. Search with the study's swarm motion (w = 0.7298, c1 = c2 = 1.49618, velocity clamp 20 %) and PSO's
    #    default budget: 5 particles, 30 trials, i.e. 5 random placements then 5 moves per particle. Keep
    #    max_trials several times swarm_size: with max_trials <= swarm_size no particle ever moves (random
    #    search; PSO warns). Each trial is scored on the validation split (never the test split).
    tuner = PSO(
        hypermodel,
        objective="val_accuracy",
        max_trials=4 if tiny else 30,
        swarm_size=2 if tiny else 5,
        seed=1,
        hyperparameters=fixed,
        directory="tuning_runs",
        project_name="randomness",
        overwrite=True,  # False resumes an interrupted search from tuning_runs/randomness
    )
    epochs = 1 if tiny else 5
    tuner.search(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        batch_size=64,
        verbose=0,
    )
    tuner.results_summary(num_trials=3)

    # 4. Rebuild the best configuration, retrain it and measure it once on the test split.
    best = tuner.get_best_hyperparameters()[0]
    print(
        f"best: loss_noise_stddev={best.get('loss_noise_stddev'):.3f}, "
        f"gradient_dropout_rate={best.get('gradient_dropout_rate'):.3f}"
    )
    model = hypermodel.build(best)
    hypermodel.fit(best, model, data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"test accuracy of the best configuration: {accuracy:.4f}")
    return best, accuracy


if __name__ == "__main__":
    main()
