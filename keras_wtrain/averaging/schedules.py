"""The SWA learning-rate schedule: PyTorch's `torch.optim.swa_utils.SWALR` as a Keras `LearningRateSchedule`."""

import math

import keras
from keras import ops

from keras_wtrain._core.validation import check_choice
from keras_wtrain._core.validation import check_int
from keras_wtrain._core.validation import check_positive
from keras_wtrain._core.validation import is_real

__all__ = ["SWASchedule"]

_OWNER = "SWASchedule"
ANNEAL_STRATEGIES = ("cos", "linear")


def _check_schedule(schedule):
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    if not is_real(schedule):
        raise TypeError(
            f"{_OWNER}: argument `schedule` must be a number > 0 or a "
            f"keras.optimizers.schedules.LearningRateSchedule; received {schedule!r}."
        )
    return check_positive("schedule", schedule, owner=_OWNER)


@keras.saving.register_keras_serializable(package="keras_wtrain")
class SWASchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Follows `schedule` until `swa_start`, then anneals to `swa_lr` and holds it, as PyTorch's `SWALR` does.

    From step `swa_start` on the learning rate is `swa_lr * alpha + lr_start * (1 - alpha)` with
    `lr_start = schedule(swa_start)`, `alpha = (1 - cos(pi * t)) / 2` ("cos") or `t` ("linear") and
    `t = clip((step - swa_start) / anneal_steps, 0, 1)` (`t = 1` when `anneal_steps == 0`): the values torch's SGD
    uses when `SWALR` takes over at optimizer step `swa_start` and steps once per optimizer step. Cost: a few scalar
    ops and two calls of `schedule` per step; it runs inside compiled train steps (TensorFlow, JAX).

    Args:
        schedule: the learning rate before `swa_start`: a number > 0 or a `LearningRateSchedule`.
        swa_lr: number > 0, the learning rate held after the annealing.
        swa_start: int >= 0, the optimizer step at which the annealing starts (convert epochs to steps).
        anneal_steps: int >= 0, the length of the annealing in steps; 0 jumps to `swa_lr` at `swa_start`.
        anneal_strategy: "cos" or "linear".

    Returns:
        Called with the optimizer step, the float32 learning rate of that step.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if an argument is out of range.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_wtrain.averaging.schedules import SWASchedule

    lr = SWASchedule(0.1, swa_lr=0.01, swa_start=4, anneal_steps=2, anneal_strategy="linear")
    np.testing.assert_allclose([float(lr(s)) for s in range(8)], [0.1] * 5 + [0.055] + [0.01] * 2, rtol=1e-6)
    keras.optimizers.SGD(learning_rate=lr)  # as any Keras schedule
    ```
    """

    def __init__(self, schedule, swa_lr, swa_start, anneal_steps=0, anneal_strategy="cos"):
        self.schedule = _check_schedule(schedule)
        self.swa_lr = check_positive("swa_lr", swa_lr, owner=_OWNER)
        self.swa_start = check_int("swa_start", swa_start, minimum=0, owner=_OWNER)
        self.anneal_steps = check_int("anneal_steps", anneal_steps, minimum=0, owner=_OWNER)
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES, owner=_OWNER)

    def _base(self, step):
        if isinstance(self.schedule, float):
            return ops.convert_to_tensor(self.schedule, "float32")
        return ops.cast(self.schedule(step), "float32")

    def __call__(self, step):
        step = ops.convert_to_tensor(step)
        before = self._base(step)
        lr_start = self._base(ops.full_like(step, self.swa_start))
        since_start = ops.cast(step, "float32") - float(self.swa_start)
        if self.anneal_steps == 0:
            t = ops.ones_like(since_start)
        else:
            t = ops.clip(since_start / float(self.anneal_steps), 0.0, 1.0)
        alpha = (1.0 - ops.cos(math.pi * t)) / 2.0 if self.anneal_strategy == "cos" else t
        after = self.swa_lr * alpha + lr_start * (1.0 - alpha)
        return ops.where(since_start < 0.0, before, after)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "swa_lr": self.swa_lr,
            "swa_start": self.swa_start,
            "anneal_steps": self.anneal_steps,
            "anneal_strategy": self.anneal_strategy,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
