"""Two gloo processes on the CPU: sharded evaluation equals one process; teardown leaves no gloo thread behind."""

import json
import os
import socket
import sys

import numpy as np
import pytest
import torch

VAL_COUNT, BATCH = 5, 2  # batches [0, 1] | [2, 3], [4]: an odd count, uneven shares, no padding allowed


def _model():
    from edc_lab.models import build_model

    torch.manual_seed(0)
    return build_model("edc_tiny", num_classes=7)


def _dataset():
    from edc_lab.data.datasets import build_dataset

    return build_dataset("synthetic", split="val", size=32, count=VAL_COUNT, seed=0)


def _gloo_threads() -> list[str]:
    """Names of this process's native threads that belong to gloo (Linux: /proc/self/task)."""
    names = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
    return sorted(name for name in names if "gloo" in name)


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    from edc_lab.train import distributed
    from edc_lab.train.evaluation import evaluate

    context = distributed.setup("cpu")
    model = _model()
    if rank == 1:  # a replica whose BatchNorm statistics drifted: evaluate must use rank 0's
        for name, buffer in model.named_buffers():
            if "running_mean" in name:
                buffer.add_(0.5)
    metrics = evaluate(model, _dataset(), batch_size=BATCH, num_classes=7, context=context)
    # then what a training run does last: a DDP step, the wrapper dropped, the group left
    wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    data = _dataset()
    optical, sar = (torch.stack([data[i][key] for i in range(2)]) for key in ("optical", "sar"))
    wrapped(optical, sar)["logits"].mean().backward()
    del wrapped
    distributed.cleanup(context)
    report = {"metrics": metrics, "gloo_threads_after_cleanup": _gloo_threads()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as stream:
        json.dump(report, stream)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux /proc to list threads")
    out = tmp_path_factory.mktemp("ddp_eval")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.start_processes(_worker, args=(2, port, str(out)), nprocs=2, start_method="spawn")
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.slow
def test_two_processes_evaluate_exactly_like_one(two_ranks):
    """Each rank reads its own whole batches; the summed confusion matrices give the single-process metrics."""
    from edc_lab.train.evaluation import evaluate

    single = json.loads(json.dumps(evaluate(_model(), _dataset(), batch_size=BATCH, num_classes=7)))
    for report in two_ranks:  # every rank holds the full result
        metrics = report["metrics"]
        assert metrics["images"] == VAL_COUNT  # not 6: no sample padded in, none counted twice
        for region in ("all", "cloudy", "clear"):
            assert metrics["segmentation"][region]["confusion"] == single["segmentation"][region]["confusion"]
            assert metrics["segmentation"][region]["pixels"] == single["segmentation"][region]["pixels"]
        for key in ("miou", "oa", "mean_f1", "miou_cloudy", "miou_clear", "auroc"):
            np.testing.assert_equal(metrics[key], single[key])  # exactly; NaN == NaN
        assert metrics["cloud_removal"] == pytest.approx(single["cloud_removal"], rel=1e-12)
    assert single["segmentation"]["all"]["pixels"] > 0 and len(single["auroc"]) == 4


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names from /proc")
def test_cleanup_leaves_no_gloo_thread_running(two_ranks):
    """The flake's cause: after DDP, destroy_process_group could not free the group (its gloo threads
    lived on until interpreter shutdown, where tearing them down now and then aborted a rank)."""
    for rank, report in enumerate(two_ranks):
        assert report["gloo_threads_after_cleanup"] == [], f"rank {rank}: {report['gloo_threads_after_cleanup']}"
