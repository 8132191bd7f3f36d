"""A comparison job survives a kill: every finished run is on disk, a rerun trains only the others.

The job runs in a child process (`python -c ...compare(...)`), is killed with SIGKILL once its first runs are
written, and is run again on the same output directory; its `results.json` must hold the same runs as an
uninterrupted job's, run for run (each run is deterministic per seed), and the runs written before the kill must
not be trained again (their files are left byte for byte and untouched).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_wtrain.comparison import ConfigurationMismatch
from keras_wtrain.comparison import compare

JOB = dict(model="mlp", data="digits", techniques=["weightnorm"], seeds=2, epochs=2, train_size=200, measure=False)
TIMING = ("wall_time_s", "step_time_s", "peak_rss_mib")
TIMEOUT_S = 300
pytestmark = pytest.mark.filterwarnings("ignore::keras_wtrain.comparison.harness.NotConvergedWarning")


def _command(out):
    code = (
        "import sys, warnings; warnings.simplefilter('ignore');"
        "from keras_wtrain.comparison import compare;"
        f"compare(out=sys.argv[1], progress=False, **{JOB!r})"
    )
    return [sys.executable, "-c", code, str(out)]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _runs(out):
    results = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in run.items() if k not in TIMING} for run in results["runs"]]


def _snapshot(runs_dir):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in runs_dir.glob("*.json")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(out), env=_env(), check=True, timeout=TIMEOUT_S, capture_output=True)
    return out


def test_a_killed_job_resumes_without_redoing_a_run(reference, tmp_path):
    runs_dir = tmp_path / "runs"
    child = subprocess.Popen(_command(tmp_path), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while not (runs_dir.exists() and len(list(runs_dir.glob("*.json"))) >= 2):
        assert child.poll() is None, f"the job ended before it was killed:\n{child.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "no run was written in time"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert not (tmp_path / "results.json").exists()
    before = _snapshot(runs_dir)
    assert 2 <= len(before) < 4, sorted(before)

    subprocess.run(_command(tmp_path), env=_env(), check=True, timeout=TIMEOUT_S, capture_output=True)
    after = _snapshot(runs_dir)
    assert len(after) == 4
    for name, content in before.items():
        assert after[name] == content, f"{name} was trained again"
    assert _runs(tmp_path) == _runs(reference)


def test_another_configuration_in_the_same_directory_is_refused(reference, tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    for path in reference.iterdir():  # a copy of the finished job
        if path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
    (out / "runs").mkdir()
    for path in (reference / "runs").iterdir():
        (out / "runs" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ConfigurationMismatch, match=r"--epochs was 2 there, 3 now"):
        compare(out=out, progress=False, **{**JOB, "epochs": 3})
    assert len(list((out / "runs").glob("*.json"))) == 4  # nothing lost
    # Same settings, one more technique: the finished runs are read back, only the new technique trains.
    results = compare(out=out, progress=False, **{**JOB, "techniques": ["weightnorm", "loss-noise"]})
    assert [run["technique"] for run in results["runs"]].count("loss-noise") == 2
    assert [
        {k: v for k, v in run.items() if k not in TIMING} for run in results["runs"] if run["technique"] != "loss-noise"
    ] == _runs(reference)
    # --overwrite discards them.
    results = compare(out=out, progress=False, overwrite=True, **{**JOB, "epochs": 1, "seeds": 1})
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == ["baseline__seed0.json", "weightnorm__seed0.json"]
