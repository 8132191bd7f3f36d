"""Does it help my model? Your own model and data against plain Keras, with paired seeds and verdicts.

Run: `python examples/does_it_help.py` (set KERAS_WTRAIN_TINY=1 for a run of well under a minute).
"""

import os
import tempfile
import warnings

import keras

from keras_wtrain.comparison import NotConvergedWarning
from keras_wtrain.comparison import compare
from keras_wtrain.comparison import verdict_lines


# 1. Your model: a function that builds a fresh, uncompiled Keras model each time it is called. Functional or
#    Sequential, so that the wrapping techniques (weightnorm, shadow) can rebuild it with wrapped layers.
#    It outputs one logit per class; compare compiles it (Adam 1e-3, cosine decay, cross-entropy on logits).
def build_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


# 2. Your data: plain (x, y) arrays, here scikit-learn's 1,797 8x8 digits (shipped with scikit-learn, offline).
#    compare splits them itself: class-stratified 70 % train / 10 % validation / 20 % test, always the same way.
def load_data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32").reshape(-1, 8, 8, 1), y.astype("int32")


def main():
    tiny = os.environ.get("KERAS_WTRAIN_TINY") == "1"
    out = tempfile.mkdtemp() if tiny else "runs/does_it_help"

    # 3. Two techniques and their combination (one model trained with both). The baseline (plain Keras) is
    #    added, and every technique is trained once per seed with the same initial weights and batch order.
    techniques = ["weightnorm", "sewa", "weightnorm+sewa"]
    with warnings.catch_warnings():
        # The tiny run does not converge; the convergence message is in the results (printed below).
        warnings.simplefilter("ignore", NotConvergedWarning)
        results = compare(
            build_model,
            load_data(),
            techniques=techniques,
            seeds=1 if tiny else 3,
            epochs=2 if tiny else 60,  # 60: the baseline converges (training accuracy >= 99 %)
            train_size=150 if tiny else None,  # None: the whole training split (1,258 digits)
            batch_size=64,
            out=out,
            progress=not tiny,
            measure=True,  # Hessian trace and sharpness of every final model, and each technique's own numbers
        )

    # 4. Did the baseline converge? Verdicts on under-trained models say little.
    print(results["convergence"]["message"])

    # 5. One verdict per technique (test accuracy, paired by seed, 95 % CI) and, for the combination, one more
    #    against its best part: the lines of results.md. results["verdicts"] holds the same as numbers.
    print("\n".join(verdict_lines(results["summary"])))
    helped = [name for name, v in results["verdicts"].items() if v["vs_baseline"]["verdict"] == "helped"]
    print(f"helped (95% CI above 0): {', '.join(helped) or 'none'}")

    # 6. What each technique's mechanism did, means over seeds: the flatness of the final model (Hessian trace
    #    of the layer below the last Dense, sharpness), the layers wrapped, and for the weight average the
    #    checkpoints averaged and the selection objective F (training loss) of the average vs the last checkpoint.
    for technique, entry in results["summary"].items():
        m = {name: stat["mean"] for name, stat in entry["mechanisms"].items()}  # values measured in every run

        def value(name, spec=".3g"):
            return format(m[name], spec) if name in m else "n/a"

        line = f"{technique}: Hessian trace {value('hessian_trace')}, sharpness {value('sharpness')}"
        run = next(r for r in results["runs"] if r["technique"] == technique)  # its seed-0 run
        if "wrapped_layers" in run["mechanisms"]:
            line += f", layers wrapped {run['mechanisms']['wrapped_layers']}"
        if "num_averaged" in m:
            line += (
                f", averaged {value('num_averaged', '.0f')} of {value('num_checkpoints', '.0f')} checkpoints "
                f"(seed 0: steps {run['mechanisms']['averaged_steps']}), "
                f"F {value('objective', '.4f')} vs last checkpoint {value('objective_last', '.4f')}"
            )
        print(line)
    print(f"wrote {out}/results.json, results.md and the plots")


if __name__ == "__main__":
    main()
