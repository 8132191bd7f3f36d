"""The output directory of a comparison job: its configuration and one file per finished run, written as it ends.

`compare` writes `job.json` (the settings every run depends on) before the first run and `runs/<technique>__seed<k>
.json` as soon as each run ends (written to a temporary file, then renamed, so a killed process leaves either
the whole file or none). Running the same job again reads the finished runs and trains only the others; a job
with different settings in the same directory is refused, naming the setting, unless `overwrite`.
The techniques and the number of seeds are not settings of the job: adding either reuses the finished runs.
"""

import hashlib
import json
import os
import pathlib
import shutil

__all__ = ["ConfigurationMismatch", "RunStore", "fingerprint_arrays"]

JOB_FILE = "job.json"
RUNS_DIR = "runs"


class ConfigurationMismatch(ValueError):
    """Raised when an output directory holds the runs of a job with other settings.

    Example:

    ```python
    from keras_wtrain.comparison.store import ConfigurationMismatch

    assert issubclass(ConfigurationMismatch, ValueError)
    ```
    """


def fingerprint_arrays(*arrays):
    """A short hex digest of the bytes, shapes and dtypes of numpy arrays (dicts and lists of them too).

    Args:
        *arrays: numpy arrays, or dicts / lists of them.

    Returns:
        A 16-character hex string.

    Example:

    ```python
    import numpy as np
    from keras_wtrain.comparison.store import fingerprint_arrays

    assert fingerprint_arrays(np.zeros(3)) != fingerprint_arrays(np.ones(3))
    ```
    """
    import numpy as np

    digest = hashlib.sha256()

    def feed(value):
        if isinstance(value, dict):
            for key in sorted(value):
                digest.update(str(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                feed(item)
        else:
            array = np.ascontiguousarray(value)
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())

    for array in arrays:
        feed(array)
    return digest.hexdigest()[:16]


def _run_name(technique, seed):
    return f"{technique}__seed{seed}.json"


def _write_atomically(path, text):
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class RunStore:
    """The finished runs of one comparison job in `out` (see the module docstring).

    Args:
        out: the output directory (created).
        config: the job's settings, a JSON-serialisable dict (model, data fingerprint, epochs, ...).
        overwrite: delete the runs of a job with other settings instead of refusing them.
        option_names: how each setting is called where the user set it (e.g. `{"epochs": "--epochs"}`), for the
            message of a mismatch.

    Raises:
        ConfigurationMismatch: if `out` holds runs of a job with other settings and not `overwrite`.

    Example:

    ```python
    import tempfile
    from keras_wtrain.comparison.store import RunStore

    out = tempfile.mkdtemp()
    store = RunStore(out, {"epochs": 3})
    store.save({"technique": "baseline", "seed": 0, "test_accuracy": 0.9})
    assert RunStore(out, {"epochs": 3}).load("baseline", 0)["test_accuracy"] == 0.9
    ```
    """

    def __init__(self, out, config, overwrite=False, option_names=None):
        self.out = pathlib.Path(out)
        self.config = json.loads(json.dumps(config))
        self.runs_dir = self.out / RUNS_DIR
        job = self.out / JOB_FILE
        if job.exists():
            previous = json.loads(job.read_text())
            names = option_names or {}
            order = list(names)  # the settings in the order a user thinks of them, then the others
            keys = sorted(
                set(previous) | set(self.config), key=lambda k: (order.index(k) if k in order else len(order), k)
            )
            differences = [key for key in keys if previous.get(key) != self.config.get(key)]
            if differences and not overwrite:
                key = differences[0]
                raise ConfigurationMismatch(
                    f"--out {str(self.out)!r} holds the runs of another job: {names.get(key, key)} was "
                    f"{previous.get(key)!r} there, {self.config.get(key)!r} now"
                    + (f" (and {len(differences) - 1} more setting(s))" if len(differences) > 1 else "")
                    + "; choose another output directory, or pass --overwrite (overwrite=True) to discard them"
                )
            if differences:
                shutil.rmtree(self.runs_dir, ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(exist_ok=True)
        _write_atomically(job, json.dumps(self.config, indent=2) + "\n")

    def load(self, technique, seed):
        """The finished run of `technique` with `seed`, or None if it has not finished."""
        path = self.runs_dir / _run_name(technique, seed)
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, run):
        """Writes one finished run (a dict with `technique` and `seed`) atomically."""
        _write_atomically(self.runs_dir / _run_name(run["technique"], run["seed"]), json.dumps(run, indent=2) + "\n")

    def finished(self):
        """The `(technique, seed)` pairs whose runs are written."""
        pairs = []
        for path in sorted(self.runs_dir.glob("*__seed*.json")):
            technique, _, seed = path.stem.rpartition("__seed")
            pairs.append((technique, int(seed)))
        return pairs
