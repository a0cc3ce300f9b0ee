"""DistributedDataParallel on CPU (gloo): 2 processes under torchrun train a tiny config; the
ranks see different batches (their pools differ) but end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_keep_identical_weights(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(worker),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in info] == [2, 2]
    assert info[0]["pool_sum"] != info[1]["pool_sum"]  # each rank trained on its own batches
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Only rank 0 writes the run's files.
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "log.csv").is_file()
