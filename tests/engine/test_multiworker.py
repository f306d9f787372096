"""Two MultiWorkerMirroredStrategy processes on localhost (TF_CONFIG, free loopback ports) train a few
steps, end with identical weights, and the chief writes the checkpoints (the other worker's temporary
copy is removed)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_agree_and_checkpoint(shapes_dir, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    workdir = str(tmp_path / "mw")
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "engine", "_worker.py"),
                                       shapes_dir, workdir], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=540)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert proc.returncode == 0 and lines, out[-2000:] + err[-4000:]
            results.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(r["task"] for r in results) == [0, 1]
    assert all(r["replicas"] == 2 and r["step"] == 3 for r in results)
    np.testing.assert_allclose(results[0]["sums"], results[1]["sums"], rtol=1e-6)
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    assert [p.rsplit("-", 1)[1] for p in state.all_model_checkpoint_paths] == ["2", "3"]
    assert not [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.startswith("workertemp")]
