"""Weight averaging on MNIST-5k: SWA, EMA, LAWA and SeWA, each with its own learning-rate schedule.

Run: `python examples/weight_averaging.py` (set KERAS_WTRAIN_TINY=1 for a run of a few seconds).
"""

import os
import tempfile

import keras
import numpy as np

from keras_wtrain.averaging import EMA
from keras_wtrain.averaging import LAWA
from keras_wtrain.averaging import SWA
from keras_wtrain.averaging import SeWA
from keras_wtrain.averaging import SWASchedule
from keras_wtrain.comparison.datasets import load_mnist5k
from keras_wtrain.comparison.models import build_model


def train(data, averaging, learning_rate, epochs, batch_size):
    keras.utils.set_random_seed(0)
    model = build_model("cnn", (28, 28, 1), data.num_classes)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[averaging],
    )
    return model, history


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    data = load_mnist5k(train_size=200 if tiny else 1000)
    epochs, batch_size = (4, 64) if tiny else (16, 64)
    steps_per_epoch = int(np.ceil(len(data.x_train) / batch_size))
    total = epochs * steps_per_epoch

    # 1. SWA (Izmailov et al.): the usual schedule until 75 % of the run, then a one-epoch cosine anneal to a
    #    constant SWA learning rate, and the running mean of the epoch-end weights from there on. With
    #    swap_for_validation the History's val_* are the averaged model's (Keras' SwapEMAWeights does the same).
    start = int(0.75 * epochs)
    schedule = SWASchedule(
        keras.optimizers.schedules.CosineDecay(1e-3, total),
        swa_lr=5e-4,
        swa_start=start * steps_per_epoch,
        anneal_steps=steps_per_epoch,
    )
    swa = SWA(start=start, swap_for_validation=True)
    model, history = train(data, swa, schedule, epochs, batch_size)
    print(f"SWA averaged {swa.num_averaged} epochs; validation accuracy per epoch {history.history['val_accuracy']}")
    print(f"SWA test accuracy {model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}")
    swa.restore_raw_weights()  # the last trained weights, for comparison
    print(f"   last weights    {model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}")

    # 2. EMA of every step with timm's warmup (early averages forget the random initialisation quickly).
    ema = EMA(decay=0.999, warmup=True)
    model, _ = train(data, ema, 1e-3, epochs, batch_size)
    print(
        f"EMA ({ema.num_averaged} updates, last decay {ema.current_decay():.4f}) test accuracy "
        f"{model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}"
    )

    # 3. LAWA (Kaddour et al.): the mean of the last k epoch-end checkpoints, under a constant learning rate.
    lawa = LAWA(k=3)
    model, _ = train(data, lawa, 1e-3, epochs, batch_size)
    print(
        f"LAWA of steps {lawa.checkpoint_steps.tolist()} test accuracy "
        f"{model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}"
    )

    # 4. SeWA (Wang et al.): T checkpoints over the second half of training, K of them chosen by a learned mask,
    #    never worse on the training loss than LAWA, the whole window or random subsets. A callback cannot see
    #    fit's data, so the training data is passed for the selection objective.
    k, t = (2, 4) if tiny else (10, 20)
    sewa = SeWA(
        k=k,
        num_checkpoints=t,
        start=total // 2,
        every_n_steps=max(1, (total // 2) // t),
        selection_data=(data.x_train, data.y_train),
        seed=0,
    )
    model, _ = train(data, sewa, 1e-3, epochs, batch_size)
    print("SeWA chose steps", sewa.selected_steps, "of", sewa.checkpoint_steps.tolist())
    print("training loss F of SeWA's choice and of its baselines:", sewa.selection_report["objective"])
    print(f"SeWA test accuracy {model.evaluate(data.x_test, data.y_test, verbose=0)[1]:.4f}")

    # 5. A .keras file saved after fit holds the averaged weights.
    path = os.path.join(tempfile.mkdtemp(), "sewa.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(data.x_test[:32], verbose=0), model.predict(data.x_test[:32], verbose=0))


if __name__ == "__main__":
    main()
