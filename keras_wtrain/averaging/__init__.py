"""Weight averaging: SWA and EMA (running averages), LAWA (the latest `k` checkpoints) and SeWA (a learned
selection of `k` of the last `T`), one callback each on a shared base, and the SWA learning-rate schedule."""

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.averaging.base import WeightAveraging
from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer
from keras_wtrain.averaging.lawa import LAWA
from keras_wtrain.averaging.objective import SelectionObjective
from keras_wtrain.averaging.recorder import TrajectoryRecorder
from keras_wtrain.averaging.running import EMA
from keras_wtrain.averaging.running import SWA
from keras_wtrain.averaging.schedules import SWASchedule
from keras_wtrain.averaging.selection import select_checkpoints
from keras_wtrain.averaging.sewa import SeWA

__all__ = [
    "EMA",
    "LAWA",
    "SWA",
    "SWASchedule",
    "CheckpointBuffer",
    "SeWA",
    "SelectionObjective",
    "TrajectoryRecorder",
    "WeightAveraging",
    "select_checkpoints",
]
