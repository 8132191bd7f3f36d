"""Process handling of the multi-process tests: start workers, wait for them with a deadline, kill them all.

Every worker is a `python <script>` subprocess in its own session (process group), with its output in a log file.
"""

import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def worker_env(**extra):
    """The environment of a worker: TensorFlow backend, quiet logs, no oneDNN reordering, the repository importable."""
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_ENABLE_ONEDNN_OPTS="0",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (bound together, then released for the workers)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Worker:
    def __init__(self, proc, log_path, name):
        self.proc, self.log_path, self.name = proc, log_path, name

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait(self, timeout):
        """Waits for the worker to exit; kills it and raises RuntimeError past `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"worker {self.name} still running after {timeout}s:\n{self.log_tail()}") from None

    def check(self, timeout):
        """Waits for the worker and raises RuntimeError (with its log) unless it exited with status 0."""
        code = self.wait(timeout)
        if code != 0:
            raise RuntimeError(f"worker {self.name} exited with status {code}:\n{self.log_tail()}")

    def kill(self):
        """SIGKILL to the worker's process group (the worker and anything it started), then reaps it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


class Processes:
    """The workers of one test module."""

    def __init__(self):
        self.workers = []

    def start(self, script, args, log_path, env=None, name=None):
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, script), *map(str, args)],
                cwd=REPO,
                env=env or worker_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, log_path, name or f"{script} {' '.join(map(str, args))}")
        self.workers.append(worker)
        return worker

    def kill_all(self):
        for worker in self.workers:
            worker.kill()


def wait_for_file(path, worker, timeout):
    """Waits until `path` exists; raises RuntimeError if `worker` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker {worker.name} exited ({worker.proc.returncode}) first:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout}s:\n{worker.log_tail()}")
        time.sleep(0.2)
