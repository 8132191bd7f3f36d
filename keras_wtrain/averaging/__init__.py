"""Weight averaging: SeWA selective weight averaging (Wang et al. 2025), with SWA, LAWA and EMA as its rules."""

from keras_wtrain._core import backend_guard  # noqa: F401  (refuses an unsupported backend)
from keras_wtrain.averaging.checkpoint_buffer import CheckpointBuffer
from keras_wtrain.averaging.objective import SelectionObjective
from keras_wtrain.averaging.recorder import TrajectoryRecorder
from keras_wtrain.averaging.rules import AVERAGING_RULES
from keras_wtrain.averaging.rules import Average
from keras_wtrain.averaging.rules import AveragingContext
from keras_wtrain.averaging.selection import select_checkpoints
from keras_wtrain.averaging.sewa import SelectiveWeightAveraging
from keras_wtrain.averaging.sewa import SeWA

__all__ = [
    "AVERAGING_RULES",
    "Average",
    "AveragingContext",
    "CheckpointBuffer",
    "SeWA",
    "SelectionObjective",
    "SelectiveWeightAveraging",
    "TrajectoryRecorder",
    "select_checkpoints",
]
