"""Training EDC: losses, metrics, the loop, checkpoints, several processes (DESIGN §2).

Read in this order:

* ``losses``: cross-entropy, Charbonnier cloud removal, feature / logit distillation;
* ``metrics``: IoU, mIoU, OA, F1 (all / cloudy / clear pixels), PSNR, SSIM, SAM, AUROC;
* ``config``: :class:`TrainConfig` and the ``cpu-quick`` / ``gpu-full`` profiles;
* ``checkpoint``: atomic writes, ``weights_only`` loads, RNG states;
* ``distributed``: torchrun / DDP, the (seed, step)-determined sampler;
* ``loop``: :func:`train`, a run as named steps, each one in a file of its own:
  ``runtime`` (seeds, determinism, autocast dtype), ``run_data`` (datasets and each
  step's batch), ``optim`` (AdamW and its schedule), ``training_step`` (loss terms,
  update, non-finite guards), ``evaluation`` (:func:`evaluate`,
  :func:`cloud_cover_sweep`), ``run_checkpoints`` (resume, teacher, writing), and
  ``state`` (what the steps share);
* ``cli`` / ``evaluate_cli``: ``edc-lab train`` and ``edc-lab evaluate``.

>>> from edc_lab.train import make_config, train
>>> history = train(make_config(profile="cpu-quick", out="runs/teacher"))  # doctest: +SKIP
"""

from edc_lab.train.checkpoint import CheckpointError, export_weights, load_checkpoint, read_checkpoint, save_checkpoint
from edc_lab.train.config import PROFILES, TrainConfig, load_toml, make_config
from edc_lab.train.evaluation import cloud_cover_sweep, evaluate
from edc_lab.train.loop import train
from edc_lab.train.run_data import CachedDataset
from edc_lab.train.training_step import NonFiniteLossError

__all__ = [
    "PROFILES",
    "CachedDataset",
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
