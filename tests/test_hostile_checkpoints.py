"""Hostile checkpoints, model sizes, resumed settings and input dtypes: one clear message each.

The rule (STYLE.md, "errors at the boundary"), as in ``test_hostile_inputs.py``:
a bad checkpoint, ``build_args``, resumed setting or input tensor ends in one
message naming the culprit, what was expected and what was found — a
``CheckpointError`` / ``ValueError`` in the API, exit code 2 and one line on
stderr in the CLI — before anything is allocated, written or destroyed.

* non-finite weights: refused by every load (``load_checkpoint``: ``predict``,
  ``evaluate``, a student's ``--teacher``), naming the file, the tensor and its
  NaN / Inf counts;
* ``build_args`` that describe a nonsense model (zero heads or widths) or an
  absurd one (1.7e12 parameters): refused by ``build_model`` before it
  allocates (the test watches the process's peak memory);
* ``train --resume`` with another ``lr`` / ``weight_decay`` (kept by the
  optimiser state), ``init_from_teacher`` (acts only at the start) or
  ``model_overrides`` (another model): refused, since config.json would record
  a value the run does not use; a weights-only export applies a new ``lr``, and
  a changed schedule (``steps``, ``min_lr_ratio``) rules from the first resumed step;
* inputs of another dtype than the model's weights: refused by ``check_inputs``,
  which every model's forward gives its parameters' dtype.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import sys
from pathlib import Path

import pytest
import torch

from edc_lab.cli import main
from edc_lab.data import M3MCR
from edc_lab.models import MODEL_NAMES, build_model
from edc_lab.models.contract import check_inputs, parameter_dtype
from edc_lab.models.registry import MAX_PARAMETERS, model_config, planned_parameters
from edc_lab.train import CheckpointError, export_weights, load_checkpoint, make_config, read_checkpoint, train
from edc_lab.train.checkpoint import save_checkpoint
from edc_lab.train import training_step
from edc_lab.train.optim import lr_factor

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_fake_datasets import make_fake_m3mcr  # noqa: E402

M3MCR_CLASS_NAMES = ["forest", "rangeland", "agriculture", "urban", "barren", "water"]
#: a 2-step teacher run, as small as the loop allows
TINY = dict(size=32, batch_size=2, train_count=6, val_count=2, steps=2, warmup_steps=1, eval_every=0,
            checkpoint_every=2, progress=False, lr=1e-3, augment=False)
#: the most the process's peak memory may grow while a nonsense model is refused (a build would take GBs)
MEMORY_MARGIN_MIB = 256


# --------------------------------------------------------------------------- helpers
def save_model(path: Path, num_classes: int = 6, build_args: dict | None = None, poison: bool = False,
               data: dict | None = None) -> Path:
    """An ``edc_tiny`` checkpoint; ``poison`` puts 2 NaN and 1 Inf into its first weight."""
    torch.manual_seed(0)
    model = build_model("edc_tiny", num_classes=num_classes)
    state = model.state_dict()
    if poison:
        first = next(name for name, value in state.items() if value.is_floating_point())
        state[first].view(-1)[:3] = torch.tensor([float("nan"), float("nan"), float("inf")])
    data = data or {"name": "m3mcr", "class_names": M3MCR_CLASS_NAMES, "in_sar": 2}
    save_checkpoint(path, {"model": state, "build_args": build_args or model.build_args, "step": 0, "data": data})
    return path


def first_weight_name() -> str:
    return next(name for name, value in build_model("edc_tiny").state_dict().items() if value.is_floating_point())


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def peak_memory_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def expect_cli_error(argv: list, fragments: list[str], capsys) -> str:
    """Run ``edc-lab argv`` in-process: exit 2, one line on stderr holding every fragment, no traceback."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in stderr: {err}"
    return err


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A fake M3M-CR optical / SAR pair (read-only)."""
    root = make_fake_m3mcr(tmp_path_factory.mktemp("scene") / "m3mcr", count=1, size=40)
    return M3MCR(root).files[0]


def predict_argv(checkpoint: Path, scene, out: Path) -> list:
    return ["predict", "--checkpoint", checkpoint, "--optical", scene.optical, "--sar", scene.sar, "--out", out,
            "--window", "32", "--overlap", "8"]


def evaluate_argv(checkpoint: Path, out: Path) -> list:
    return ["evaluate", "--checkpoint", checkpoint, "--data", "synthetic", "--count", "1", "--size", "32",
            "--out", out]


SYNTHETIC = {"name": "synthetic", "size": 32}


# --------------------------------------------------------------------------- 1. non-finite weights
def test_load_checkpoint_refuses_non_finite_weights_naming_the_tensor_and_counts(tmp_path):
    path = save_model(tmp_path / "poisoned.pt", poison=True)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    fragments = ["poisoned.pt", first_weight_name(), "2 NaN and 1 Inf of", "floating-point tensors", "expected none"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_refuse_non_finite_weights_and_write_nothing(command, scene, tmp_path, capsys):
    if command == "predict":
        checkpoint = save_model(tmp_path / "poisoned.pt", poison=True)
        out = tmp_path / "map.tif"
        argv = predict_argv(checkpoint, scene, out)
    else:
        checkpoint = save_model(tmp_path / "poisoned.pt", num_classes=7, poison=True, data=SYNTHETIC)
        out = tmp_path / "metrics.json"
        argv = evaluate_argv(checkpoint, out)
    before = digest(checkpoint)
    expect_cli_error(argv, ["poisoned.pt", "not finite", first_weight_name(), "2 NaN and 1 Inf"], capsys)
    assert not out.exists() and digest(checkpoint) == before
    assert [p.name for p in tmp_path.iterdir()] == ["poisoned.pt"]  # no temporary output left either


def test_a_student_with_a_non_finite_teacher_is_refused_naming_the_teacher(tmp_path, capsys):
    teacher = save_model(tmp_path / "teacher.pt", num_classes=7, poison=True, data=SYNTHETIC)
    run = tmp_path / "run"
    argv = ["train", "--stage", "student", "--teacher", teacher, "--out", run, "--steps", "1", "--size", "32",
            "--batch-size", "2", "--train-count", "2", "--val-count", "1", "--eval-every", "0", "--no-progress"]
    err = expect_cli_error(argv, ["--teacher", "teacher.pt", "not finite", first_weight_name()], capsys)
    assert "learning rate" not in err and "lower lr" not in err  # not the learning rate's fault
    assert not run.exists() or not any(run.iterdir())  # no last.pt, config.json, history.json


# --------------------------------------------------------------------------- 2. nonsense and absurd model sizes
SIZE_CASES = [
    # zeros that passed build_model (fpn_dim, cr_dim) or ended in a ZeroDivisionError (fusion_heads, heads)
    pytest.param("edc_tiny", dict(fusion_heads=0), ["fusion_heads", "a positive integer", "0"], id="fusion-heads-0"),
    pytest.param("edc_tiny", dict(fpn_dim=0), ["fpn_dim", "a positive integer", "0"], id="fpn-dim-0"),
    pytest.param("edc_tiny", dict(cr_dim=0), ["cr_dim", "a positive integer", "0"], id="cr-dim-0"),
    pytest.param("edc_tiny", dict(heads=(0, 4)), ["heads", "2 positive integers", "(0, 4)"], id="heads-0"),
    pytest.param("edc_tiny", dict(carriers=0), ["carriers", "a positive integer", "0"], id="carriers-0"),
    pytest.param("edc_tiny", dict(widths=(0, 48, 80, 112)), ["widths", "4 positive integers"], id="widths-0"),
    pytest.param("edc_tiny", dict(mlp_ratio=0.0), ["mlp_ratio", ">= 1", "0.0"], id="mlp-ratio-0"),
    pytest.param("edc_tiny", dict(fpn_dim=2.5), ["fpn_dim", "a positive integer", "2.5"], id="fpn-dim-fraction"),
    pytest.param("edc_tiny", dict(cloud_removal="no"), ["cloud_removal", "true or false", "'no'"],
                 id="cloud-removal-a-string"),
    pytest.param("cloudseg_ref", dict(heads=(0, 2, 5, 8)), ["heads", "4 positive integers"], id="cloudseg-heads-0"),
    pytest.param("cloudseg_ref", dict(cr_hidden=0), ["cr_hidden", "a positive integer", "0"],
                 id="cloudseg-cr-hidden-0"),
    pytest.param("cloudseg_ref", dict(sr_ratios=(0, 4, 2, 1)), ["sr_ratios", "4 positive integers"],
                 id="cloudseg-sr-ratio-0"),
    # sizes each within the old bound (4096) that describe an impossible model or forward pass
    pytest.param("edc_tiny", dict(windows=(4096, 4096)), ["windows", "[1, 64]", "4096"], id="windows-4096"),
    pytest.param("edc_tiny", dict(widths=(4096,) * 4, mlp_ratio=4096.0),
                 ["widths=(4096, 4096, 4096, 4096)", "mlp_ratio=4096.0", f"{MAX_PARAMETERS:,}", "parameters"],
                 id="widths-and-mlp-ratio-4096"),
    pytest.param("edc_tiny", dict(depths=(4096,) * 4), ["depths=(4096, 4096, 4096, 4096)", f"{MAX_PARAMETERS:,}"],
                 id="depths-4096"),
]


@pytest.mark.parametrize("name,overrides,fragments", SIZE_CASES)
def test_build_model_refuses_nonsense_sizes_before_allocating(name, overrides, fragments):
    before = peak_memory_mib()
    with pytest.raises(ValueError) as caught:
        build_model(name, **overrides)
    message = str(caught.value)
    for fragment in [name, *fragments]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert peak_memory_mib() - before < MEMORY_MARGIN_MIB


#: parameter counts of the two large models, measured once (building them here would allocate 1.1 GB)
KNOWN_COUNTS = {"edc_base": 77_719_483, "cloudseg_ref": 198_966_859}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_planned_parameters_are_the_built_models_count(name):
    """The meta-device count, linear in each stage's depth, is exact: deep stages included."""
    if name in KNOWN_COUNTS:
        assert planned_parameters(name, 4, 2, 7, model_config(name)) == KNOWN_COUNTS[name]
        return
    overrides = {"depths": (2, 3, 1, 2)}
    built = build_model(name, **overrides)
    planned = planned_parameters(name, 4, 2, 7, model_config(name, **overrides))
    assert planned == sum(parameter.numel() for parameter in built.parameters())


ABSURD_BUILD_ARGS = [
    pytest.param({"widths": [4096] * 4, "mlp_ratio": 4096.0}, ["mlp_ratio=4096.0", "parameters"],
                 id="1.7e12-parameters"),
    pytest.param({"fusion_heads": 0}, ["fusion_heads", "a positive integer"], id="fusion-heads-0"),
    pytest.param({"fpn_dim": 0}, ["fpn_dim", "a positive integer"], id="fpn-dim-0"),
]


@pytest.mark.parametrize("changes,fragments", ABSURD_BUILD_ARGS)
def test_a_checkpoint_describing_a_nonsense_model_is_refused_by_every_load(changes, fragments, scene, tmp_path,
                                                                             capsys):
    def checkpoint(name: str, num_classes: int, data=None) -> Path:
        build_args = {"name": "edc_tiny", "in_optical": 4, "in_sar": 2, "num_classes": num_classes, **changes}
        return save_model(tmp_path / name, num_classes=num_classes, build_args=build_args, data=data)

    six, seven = checkpoint("absurd6.pt", 6), checkpoint("absurd7.pt", 7, SYNTHETIC)
    before = peak_memory_mib()
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(six)
    assert all(fragment in str(caught.value) for fragment in ["absurd6.pt", "build_args", *fragments])
    expect_cli_error(predict_argv(six, scene, tmp_path / "map.tif"), ["absurd6.pt", *fragments], capsys)
    expect_cli_error(evaluate_argv(seven, tmp_path / "metrics.json"), ["absurd7.pt", *fragments], capsys)
    assert peak_memory_mib() - before < MEMORY_MARGIN_MIB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["absurd6.pt", "absurd7.pt"]


# --------------------------------------------------------------------------- 3. resumed settings
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 2-step teacher run (read-only; copy it to resume it)."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(make_config(stage="teacher", model="edc_tiny", out=str(out), **TINY))
    return out


RESUME_CASES = [
    pytest.param(dict(lr=5e-4), ["lr=0.001", "lr=0.0005"], id="lr"),
    pytest.param(dict(weight_decay=0.2), ["weight_decay=0.05", "weight_decay=0.2"], id="weight-decay"),
    pytest.param(dict(init_from_teacher=True), ["init_from_teacher=False", "init_from_teacher=True"],
                 id="init-from-teacher"),
    pytest.param(dict(model_overrides={"cr_residual": False}), ["model_overrides={}", "'cr_residual': False"],
                 id="model-overrides"),
]


@pytest.mark.parametrize("changes,fragments", RESUME_CASES)
def test_resume_refuses_a_setting_it_would_record_but_not_use(changes, fragments, finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    files = {path: digest(path) for path in run.iterdir()}
    with pytest.raises(ValueError) as caught:
        train(make_config(stage="teacher", model="edc_tiny", out=str(run), resume=True,
                          **dict(TINY, steps=4, **changes)))
    message = str(caught.value)
    for fragment in ["last.pt", "cannot resume", *fragments]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert {path: digest(path) for path in run.iterdir()} == files  # checkpoint, config.json, history.json


def test_resume_with_another_lr_from_the_cli_exits_2(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    before = digest(run / "config.json")
    argv = ["train", "--resume", "--out", run, "--steps", "4", "--size", "32", "--batch-size", "2", "--train-count",
            "6", "--val-count", "2", "--eval-every", "0", "--no-progress", "--no-augment", "--lr", "0.0005"]
    expect_cli_error(argv, ["last.pt", "lr=0.001", "lr=0.0005"], capsys)
    assert digest(run / "config.json") == before


def test_a_resumed_run_uses_its_new_schedule_from_its_first_step(finished_run, tmp_path, monkeypatch):
    """``steps`` / ``min_lr_ratio`` may change on resume and config.json records them: the first resumed step must
    use the new schedule's rate, not the one the checkpoint's optimiser holds (the old schedule's last)."""
    run = shutil.copytree(finished_run, tmp_path / "run")
    used, real = [], training_step.optimizer_step

    def spy(model, loss, optimizer, *args):
        used.append(optimizer.param_groups[0]["lr"])
        return real(model, loss, optimizer, *args)

    monkeypatch.setattr(training_step, "optimizer_step", spy)
    train(make_config(stage="teacher", model="edc_tiny", out=str(run), resume=True,
                      **dict(TINY, steps=4, min_lr_ratio=0.5)))
    assert used == pytest.approx([1e-3 * lr_factor(step, 1, 4, 0.5) for step in (2, 3)])  # rates of steps 3, 4
    assert json.loads((run / "config.json").read_text())["min_lr_ratio"] == 0.5


def test_a_weights_only_export_resumes_with_the_new_lr_used_and_recorded(finished_run, tmp_path):
    """A fresh AdamW is built from the config there, so the new rate is applied: the record tells the truth."""
    export = export_weights(finished_run / "last.pt", tmp_path / "export" / "last.pt")
    with pytest.warns(UserWarning, match="weights-only export"):
        history = train(make_config(stage="teacher", model="edc_tiny", out=str(export.parent), resume=True,
                                    **dict(TINY, steps=3, lr=5e-4)))
    step3 = next(record for record in history if record["split"] == "train" and record["step"] == 3)
    assert step3["lr"] == pytest.approx(5e-4 * lr_factor(3, 1, 3, make_config().min_lr_ratio))
    assert read_checkpoint(export)["config"]["lr"] == 5e-4


# --------------------------------------------------------------------------- 4. input dtypes
def test_check_inputs_refuses_another_dtype_than_the_weights_naming_the_fix():
    model = build_model("edc_tiny")
    optical, sar = torch.rand(2, 4, 32, 32), torch.rand(2, 2, 32, 32)
    with pytest.raises(ValueError) as caught:
        check_inputs("edc_tiny", optical.double(), sar.double(), 4, 2, dtype=parameter_dtype(model))
    message = str(caught.value)
    for fragment in ["edc_tiny", "optical", "expected torch.float32", "found torch.float64", "optical.float()",
                     "model.double()"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    with pytest.raises(ValueError, match=r"sar .*expected torch\.float32, found torch\.float16.*sar\.float\(\)"):
        check_inputs("edc_tiny", optical, sar.half(), 4, 2, dtype=torch.float32)
    model.double()  # a float64 model takes float64 inputs, and only those
    check_inputs("edc_tiny", optical.double(), sar.double(), 4, 2, dtype=parameter_dtype(model))
    with pytest.raises(ValueError, match=r"expected torch\.float64, found torch\.float32"):
        check_inputs("edc_tiny", optical, sar, 4, 2, dtype=parameter_dtype(model))
    # an unused input may be anything; under autocast, casting is autocast's business
    check_inputs("optical_only", optical, sar.double(), 4, 2, use_sar=False, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        check_inputs("edc_tiny", optical.bfloat16(), sar, 4, 2, dtype=torch.float32)


@pytest.mark.parametrize("name", ["edc_tiny", "early_fusion"])
def test_a_model_refuses_inputs_of_another_dtype_and_a_float64_model_takes_float64(name):
    model = build_model(name).eval()
    optical, sar = torch.rand(2, 4, 32, 32), torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        with pytest.raises(ValueError, match=rf"{name}: optical .*expected torch\.float32, found torch\.float64"):
            model(optical.double(), sar.double())
        assert model.double()(optical.double(), sar.double())["logits"].dtype == torch.float64
