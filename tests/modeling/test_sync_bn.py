"""sync_bn under a 2-replica MirroredStrategy equals one replica on the whole batch (plain bn does not).

Logical devices must be configured before TensorFlow initializes, so each case runs
tests/modeling/_sync_bn_replicas.py in a fresh process."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "_sync_bn_replicas.py")


def _run(norm):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, SCRIPT, norm], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sync_bn_two_replicas_match_one_replica_on_the_whole_batch():
    diff = _run("sync_bn")
    assert diff["output"] < 1e-5 and diff["moving_mean"] < 1e-6 and diff["moving_variance"] < 1e-6, diff


@pytest.mark.parametrize("norm", ["bn"])
def test_unsynchronized_bn_differs_so_the_check_can_fail(norm):
    diff = _run(norm)
    assert diff["output"] > 1e-2 and diff["moving_mean"] > 1e-3, diff
