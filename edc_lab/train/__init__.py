"""Training EDC: losses, metrics, the loop, checkpoints, several processes (DESIGN §2).

Read in this order:

* ``losses``: cross-entropy, Charbonnier cloud removal, feature / logit distillation;
* ``metrics``: IoU, mIoU, OA, F1 (all / cloudy / clear pixels), PSNR, SSIM, SAM, AUROC;
* ``config``: :class:`TrainConfig` and the ``cpu-quick`` / ``gpu-full`` profiles;
* ``checkpoint``: atomic writes, ``weights_only`` loads, RNG states;
* ``distributed``: torchrun / DDP, the (seed, step)-determined sampler;
* ``loop``: :func:`train` and :func:`evaluate`;
* ``cli`` / ``evaluate_cli``: ``edc-lab train`` and ``edc-lab evaluate``.

>>> from edc_lab.train import make_config, train
>>> history = train(make_config(profile="cpu-quick", out="runs/teacher"))  # doctest: +SKIP
"""

from edc_lab.train.checkpoint import CheckpointError, export_weights, load_checkpoint, read_checkpoint, save_checkpoint
from edc_lab.train.config import PROFILES, TrainConfig, load_toml, make_config
from edc_lab.train.loop import NonFiniteLossError, cloud_cover_sweep, evaluate, train

__all__ = [
    "PROFILES",
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "cloud_cover_sweep",
    "evaluate",
    "export_weights",
    "load_checkpoint",
    "load_toml",
    "make_config",
    "read_checkpoint",
    "save_checkpoint",
    "train",
]
