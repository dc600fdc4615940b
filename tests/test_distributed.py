"""Several processes: the (seed, step) sampler, replica digests, and a real 2-process DDP run on CPU."""

import os
import re
import subprocess
import sys

import pytest
import torch

from edc_lab.train.checkpoint import read_checkpoint
from edc_lab.train.distributed import DistributedContext, StepSampler, parameter_digest


def test_data_order_is_a_function_of_seed_and_step():
    data = list(range(10))
    whole = list(StepSampler(data, batch_size=3, seed=7, start_step=0, total_steps=9))
    tail = list(StepSampler(data, batch_size=3, seed=7, start_step=4, total_steps=9))
    assert len(whole) == 27 and tail == whole[12:]  # resuming at step 4 skips exactly 4 batches
    assert sorted(whole[:10]) == data  # the first epoch is a permutation
    other_seed = list(StepSampler(data, batch_size=3, seed=8, start_step=0, total_steps=9))
    assert other_seed != whole


def test_ranks_read_disjoint_shares_of_each_epoch():
    data = list(range(12))
    shares = [
        list(StepSampler(data, 3, seed=0, start_step=0, total_steps=2, context=DistributedContext(rank, 2)))
        for rank in range(2)
    ]
    assert len(shares[0]) == len(shares[1]) == 6
    assert sorted(shares[0] + shares[1]) == data


def test_too_small_dataset_is_refused():
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepSampler(list(range(3)), 2, 0, 0, 5, DistributedContext(0, 2))


def test_parameter_digest_sees_one_bit():
    model = torch.nn.Linear(3, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    assert parameter_digest(model) == parameter_digest(twin)
    with torch.no_grad():
        twin.bias[0] = torch.nextafter(twin.bias[0], torch.tensor(1.0))
    assert parameter_digest(model) != parameter_digest(twin)


@pytest.mark.slow
def test_two_cpu_processes_train_identical_replicas(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "edc_lab.cli", "train", "--stage", "teacher", "--model", "edc_tiny", "--data", "synthetic",
        "--out", str(out), "--steps", "3", "--size", "32", "--batch-size", "2", "--train-count", "8",
        "--val-count", "2", "--eval-every", "0", "--checkpoint-every", "2", "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    digests = dict(re.findall(r"rank (\d)/2: finished, parameter digest ([0-9a-f]{64})", output))
    assert set(digests) == {"0", "1"}, output[-3000:]  # both ranks finished
    assert digests["0"] == digests["1"]  # DDP kept the replicas bit-identical
    checkpoint = read_checkpoint(out / "last.pt")  # written by rank 0
    assert checkpoint["step"] == 3 and len(checkpoint["rng"]) == 2  # one RNG state per rank
    assert parameter_digest_of(checkpoint["model"]) == digests["0"]


def parameter_digest_of(state_dict):
    from edc_lab.models import build_model

    model = build_model("edc_tiny")
    model.load_state_dict(state_dict)
    return parameter_digest(model)


def test_cuda_device_names_under_torchrun(monkeypatch):
    """A bare "cuda" is the process's own GPU; a fixed index is refused when several processes run."""
    from edc_lab.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda", local_rank=3, world_size=4) == torch.device("cuda:3")
    assert resolve_device("auto", local_rank=1, world_size=2) == torch.device("cuda:1")
    assert resolve_device("cuda:1", local_rank=0, world_size=1) == torch.device("cuda:1")
    with pytest.raises(ValueError, match="'cuda:0' names one GPU, but 2 processes"):
        resolve_device("cuda:0", local_rank=1, world_size=2)
    assert resolve_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")


def test_auto_mixed_precision_takes_bf16_only_where_the_gpu_has_it(monkeypatch):
    from edc_lab.train.runtime import resolve_amp

    gpu = torch.device("cuda:0")
    for capability, expected in (((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                 ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_amp("auto", gpu) is expected
    assert resolve_amp("bf16", gpu) is torch.bfloat16 and resolve_amp("fp16", gpu) is torch.float16
    assert resolve_amp("off", gpu) is None and resolve_amp("auto", torch.device("cpu")) is None
