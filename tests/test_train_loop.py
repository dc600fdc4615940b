"""The training loop: exact resume, NaN guard, stages, baselines, evaluation (edc_lab.train.loop)."""

import json
import math

import pytest
import torch

import edc_lab.train.loop as loop
import edc_lab.train.training_step as training_step
from edc_lab.models import build_model
from edc_lab.train import NonFiniteLossError, evaluate, load_checkpoint, make_config, read_checkpoint, train
from edc_lab.train.config import TrainConfig
from edc_lab.train.evaluation import model_inputs
from edc_lab.train.optim import lr_factor
from edc_lab.train.run_checkpoints import load_teacher
from edc_lab.train.training_step import compute_losses

TINY = dict(size=32, batch_size=2, train_count=6, val_count=2, steps=4, warmup_steps=1, eval_every=0,
            checkpoint_every=2, progress=False, lr=1e-3, augment=False)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(make_config(stage="teacher", model="edc_tiny", out=str(out), **TINY))
    return out / "last.pt"


def _student(out, teacher, **changes):
    values = dict(TINY, stage="student", model="edc_tiny", out=str(out), teacher=str(teacher), lambda_kl=0.5,
                  augment=True)  # random flips / rotations must resume exactly too
    values.update(changes)
    return make_config(**values)


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, teacher_checkpoint):
    """On CPU, stop after step 5 of 6 (last checkpoint: step 4), resume: bit-identical to one go."""
    whole = _student(tmp_path / "whole", teacher_checkpoint, steps=6)
    history_whole = train(whole)

    def stop_at_step_5(record, history):
        if record["split"] == "train" and record["step"] == 5:
            raise Interrupt

    interrupted = _student(tmp_path / "split", teacher_checkpoint, steps=6)
    with pytest.raises(Interrupt):
        train(interrupted, callback=stop_at_step_5)
    assert read_checkpoint(tmp_path / "split" / "last.pt")["step"] == 4
    history_resumed = train(_student(tmp_path / "split", teacher_checkpoint, steps=6, resume=True))

    first = read_checkpoint(tmp_path / "whole" / "last.pt")
    second = read_checkpoint(tmp_path / "split" / "last.pt")
    assert first["step"] == second["step"] == 6
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    losses = lambda h: [(r["step"], r["loss"], r.get("loss_kd"), r.get("loss_cr")) for r in h if r["split"] == "train"]
    assert losses(history_whole) == losses(history_resumed)
    assert {"loss_seg", "loss_cr", "loss_kd", "loss_kl"} <= set(history_whole[0])


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = training_step.segmentation_loss

    def poisoned(logits, label, *args, **kwargs):
        calls["n"] += 1
        value = real(logits, label, *args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(training_step, "segmentation_loss", poisoned)
    config = make_config(stage="teacher", out=str(tmp_path), **TINY)
    with pytest.raises(NonFiniteLossError, match=r"step 3 of 4.*last\.pt \(step 2\)"):
        train(config)
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    # and the run can be resumed from that good checkpoint once the cause is gone
    monkeypatch.setattr(training_step, "segmentation_loss", real)
    history = train(make_config(stage="teacher", out=str(tmp_path), resume=True, **TINY))
    assert history[-1]["step"] == 4 and read_checkpoint(tmp_path / "last.pt")["step"] == 4


def test_history_callback_checkpoint_contents(tmp_path):
    seen = []
    config = make_config(stage="teacher", out=str(tmp_path), **dict(TINY, eval_every=2))
    history = train(config, callback=lambda record, h: seen.append(record["split"]))
    assert seen == [r["split"] for r in history] == ["train", "train", "val", "train", "train", "val"]
    validation = [r for r in history if r["split"] == "val"]
    assert [r["step"] for r in validation] == [2, 4]
    assert 0.0 <= validation[-1]["miou"] <= 1.0 and len(validation[-1]["auroc"]) == 4
    assert json.loads((tmp_path / "history.json").read_text()) == json.loads(json.dumps(history))
    model, meta = load_checkpoint(tmp_path / "last.pt")
    assert not model.training and meta["step"] == 4 and meta["config"]["stage"] == "teacher"
    assert meta["data"]["class_names"][0] == "farmland" and meta["data"]["in_sar"] == 2
    # the learning rate follows the schedule
    lrs = [r["lr"] for r in history if r["split"] == "train"]
    assert lrs == pytest.approx([1e-3 * lr_factor(s, 1, 4, config.min_lr_ratio) for s in range(1, 5)])


def test_existing_run_needs_resume_and_matching_settings(tmp_path):
    train(make_config(stage="teacher", out=str(tmp_path), **dict(TINY, steps=2)))
    with pytest.raises(ValueError, match="pass --resume"):
        train(make_config(stage="teacher", out=str(tmp_path), **dict(TINY, steps=2)))
    with pytest.raises(ValueError, match="model='edc_tiny'"):
        train(make_config(stage="teacher", model="optical_only", out=str(tmp_path), resume=True, **TINY))


@pytest.mark.parametrize("name", ["optical_only", "sar_only", "edc_no_cr"])
def test_baselines_train_with_the_same_loop(tmp_path, name):
    config = make_config(stage="student", model=name, out=str(tmp_path), lambda_kd=0.0, **dict(TINY, steps=2))
    history = train(config)
    has_head = build_model(name).has_cloud_removal
    assert ("loss_cr" in history[0]) == has_head
    assert history[-1]["split"] == "val"


def _batch(size=16, batch=2):
    torch.manual_seed(0)
    cloud = torch.zeros(batch, size, size)
    cloud[:, : size // 2] = 1.0
    return {
        "optical": torch.rand(batch, 4, size, size),
        "optical_clear": torch.rand(batch, 4, size, size),
        "sar": torch.rand(batch, 2, size, size),
        "label": torch.randint(0, 7, (batch, size, size)),
        "cloud_mask": cloud,
        "has_clear": torch.ones(batch, dtype=torch.bool),
    }


def test_loss_terms_per_stage_and_model():
    batch = _batch()
    model = build_model("edc_tiny")
    outputs = model(batch["optical"], batch["sar"])
    teacher_config = TrainConfig(stage="teacher")
    total, terms = compute_losses(outputs, batch, teacher_config, True)
    assert list(terms) == ["seg"] and total is terms["seg"] or torch.equal(total, terms["seg"])
    student_config = TrainConfig(stage="student", teacher="t.pt", lambda_cr=0.5, lambda_kd=2.0, lambda_kl=0.25)
    with torch.no_grad():
        teacher_outputs = build_model("edc_tiny")(batch["optical_clear"], batch["sar"])
    total, terms = compute_losses(outputs, batch, student_config, True, teacher_outputs)
    assert list(terms) == ["seg", "cr", "kd", "kl"]
    expected = terms["seg"] + 0.5 * terms["cr"] + 2.0 * terms["kd"] + 0.25 * terms["kl"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    _, terms = compute_losses(outputs, batch, student_config, False, teacher_outputs)  # no cloud-removal head
    assert "cr" not in terms


def test_teacher_sees_the_clear_image_and_student_the_cloudy_one():
    batch = _batch()
    assert model_inputs(batch, "clear")[0] is batch["optical_clear"]
    assert model_inputs(batch, "cloudy")[0] is batch["optical"]
    batch["has_clear"][1] = False
    with pytest.raises(ValueError, match="cloud-free"):
        model_inputs(batch, "clear")


def test_teacher_is_frozen_and_must_match(tmp_path, teacher_checkpoint):
    student_args = build_model("edc_tiny").build_args
    teacher = load_teacher(TrainConfig(stage="student", teacher=str(teacher_checkpoint)), torch.device("cpu"), student_args)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="num_classes=6"):
        load_teacher(TrainConfig(stage="student", teacher=str(teacher_checkpoint)), torch.device("cpu"),
                     {**student_args, "num_classes": 6})


def test_student_without_teacher_is_refused_unless_distillation_is_off():
    with pytest.raises(ValueError, match="--teacher"):
        make_config(stage="student")
    assert make_config(stage="student", lambda_kd=0.0).teacher is None


class OracleModel(torch.nn.Module):
    """Reads the label from SAR channel 0 (label / 10) and the cloud mask from optical band 0."""

    def forward(self, optical, sar):
        label = torch.round(sar[:, 0] * 10).long()
        logits = torch.nn.functional.one_hot(label, 7).permute(0, 3, 1, 2).float()
        discrepancy = torch.nn.functional.avg_pool2d(optical[:, :1], 4)
        return {"logits": logits, "cloudfree": None, "discrepancy": [discrepancy], "features": []}


def test_evaluate_end_to_end_with_an_oracle():
    torch.manual_seed(0)
    samples = []
    for _ in range(3):
        label = torch.randint(0, 7, (16, 16))
        cloud = (torch.rand(16, 16) > 0.5).float()
        label[0, 0] = 255
        samples.append({
            "optical": cloud.expand(4, 16, 16).clone(), "optical_clear": torch.rand(4, 16, 16),
            "sar": torch.stack([label.clamp(max=6).float() / 10, torch.zeros(16, 16)]),
            "label": label, "cloud_mask": cloud, "has_clear": torch.tensor(True),
        })
    metrics = evaluate(OracleModel(), samples, batch_size=2, num_classes=7)
    assert metrics["miou"] == metrics["miou_cloudy"] == metrics["miou_clear"] == 1.0
    assert metrics["images"] == 3 and metrics["segmentation"]["all"]["pixels"] == 3 * 255
    assert 0.5 < metrics["auroc"][0] <= 1.0  # D = local cloud fraction ranks cloudy cells first
    assert metrics["cloud_removal"] == {}


def test_lr_schedule_shape():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


# --------------------------------------------------------------------------- config, TOML, CLI
def test_config_priorities_profile_toml_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('profile = "cpu-quick"\nsteps = 7\nlr = 1\nkd_region = "cloudy"\ncloud_cover = [0.3, 0.5]\n')
    config = make_config(toml=toml, steps=9)
    assert (config.size, config.batch_size) == (96, 8)  # from the profile
    assert config.lr == 1.0 and config.kd_region == "cloudy" and config.cloud_cover == (0.3, 0.5)  # from the file
    assert config.steps == 9 and config.profile == "cpu-quick"  # the explicit value wins
    table = tmp_path / "table.toml"
    table.write_text("[train]\nsteps = 3\n")
    assert make_config(toml=table).steps == 3


@pytest.mark.parametrize("text,message", [
    ("stepz = 3\n", "unknown setting 'stepz'"),
    ("steps = 'many'\n", "steps: expected an integer"),
    ("augment = 1\n", "augment: expected true or false"),
    ("steps = [\n", "syntax error"),
    ('kd_region = "sky"\n', "kd_region: expected one of"),
])
def test_bad_toml_gives_one_clear_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        make_config(toml=path)
    if "kd_region" not in message:
        assert "bad.toml" in str(error.value)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="profile: expected one of"):
        make_config(profile="tpu-huge")
    with pytest.raises(ValueError, match="root: data='m3mcr' needs"):
        make_config(data="m3mcr")
    with pytest.raises(ValueError, match="cloud_cover"):
        make_config(cloud_cover=(0.8, 0.2))
    with pytest.raises(ValueError, match="no such file"):
        make_config(toml="/nonexistent/run.toml")


def test_train_and_evaluate_commands(tmp_path, capsys):
    from edc_lab.cli import main

    toml = tmp_path / "run.toml"
    toml.write_text("size = 32\nbatch_size = 2\ntrain_count = 4\nval_count = 2\nsteps = 50\naugment = false\n")
    out = tmp_path / "run"
    code = main(["train", "--config", str(toml), "--steps", "2", "--out", str(out), "--no-progress",
                 "--eval-every", "0"])
    assert code == 0 and "teacher edc_tiny: step 2" in capsys.readouterr().out
    assert read_checkpoint(out / "last.pt")["config"]["steps"] == 2  # the flag beat the file
    metrics_path = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(out / "last.pt"), "--count", "2", "--out", str(metrics_path)])
    printed = capsys.readouterr().out
    assert code == 0 and "cloudy" in printed and "AUROC" in printed
    metrics = json.loads(metrics_path.read_text())
    assert metrics["data"]["size"] == 32 and metrics["images"] == 2 and 0 <= metrics["miou"] <= 1
    # bad input: one line on stderr, exit code 2
    assert main(["train", "--out", str(out), "--steps", "2"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_live_plot_draws_the_history():
    from edc_lab.train.live import LivePlot, plot_history

    history = [{"split": "train", "step": s, "loss": 2.0 / s, "loss_seg": 1.5 / s, "lr": 1e-3} for s in range(1, 5)]
    history.append({"split": "val", "step": 4, "miou": 0.5, "miou_cloudy": 0.4, "miou_clear": 0.6})
    figure = plot_history(history)
    loss_axis, miou_axis = figure.axes
    assert len(loss_axis.lines) == 2 and len(miou_axis.lines) == 3
    assert list(miou_axis.lines[1].get_ydata()) == [0.4]
    live = LivePlot(every=2)
    for record in history:
        live(record, history)  # outside a notebook: draws, displays nothing, raises nothing
    assert len(live.axes[1].lines) == 3


@pytest.mark.real_data
@pytest.mark.slow
def test_training_on_the_real_m3mcr_tile(m3mcr_sample_root, tmp_path):
    """300 x 300 M3M-CR scenes are cropped to the patch size by the seeded augmentation."""
    config = make_config(stage="student", model="edc_tiny", data="m3mcr", root=str(m3mcr_sample_root),
                         val_split="train", lambda_kd=0.0, out=str(tmp_path),
                         **dict(TINY, size=64, steps=2, augment=True))
    history = train(config)
    validation = history[-1]
    assert validation["split"] == "val" and 0.0 <= validation["miou"] <= 1.0
    _, meta = load_checkpoint(tmp_path / "last.pt")
    assert meta["data"]["name"] == "m3mcr" and meta["data"]["num_classes"] == 6
    assert meta["data"]["class_names"][0] == "forest"


def test_optional_cloud_supervision_of_the_discrepancy_maps():
    """lambda_cloud adds the mean over stages of BCE(D_k, cloud mask), for the student only."""
    from edc_lab.models.discrepancy import cloud_bce

    batch = _batch()
    model = build_model("edc_tiny")
    outputs = model(batch["optical"], batch["sar"])
    config = TrainConfig(stage="student", lambda_kd=0.0, lambda_cr=0.0, lambda_cloud=0.5)
    total, terms = compute_losses(outputs, batch, config, True)
    assert list(terms) == ["seg", "cloud"]
    by_hand = sum(cloud_bce(d, batch["cloud_mask"]) for d in outputs["discrepancy"]) / 4
    assert terms["cloud"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert total.item() == pytest.approx((terms["seg"] + 0.5 * by_hand).item(), rel=1e-6)
    terms["cloud"].backward(retain_graph=True)  # the term trains the discrepancy head of every stage
    for fusion in model.encoder.fusions:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.discrepancy.parameters())
    _, teacher_terms = compute_losses(outputs, batch, TrainConfig(stage="teacher", lambda_cloud=0.5), True)
    assert "cloud" not in teacher_terms  # the teacher sees cloud-free images: no clouds to find
    plain = build_model("edc_no_dchf")(batch["optical"], batch["sar"])
    assert "cloud" not in compute_losses(plain, batch, config, True)[1]  # no discrepancy maps
    with pytest.raises(ValueError, match="lambda_cloud"):
        make_config(stage="student", lambda_kd=0.0, lambda_cloud=-1.0)


# --------------------------------------------------------------------------- guards: fp16 skips, gradients, weights, labels
def _tiny_step_setup(scaler_enabled):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", enabled=scaler_enabled)
    return model, optimizer, scheduler, scaler


def test_a_step_that_grad_scaler_skips_does_not_advance_the_schedule():
    from edc_lab.train.training_step import optimizer_step

    model, optimizer, scheduler, scaler = _tiny_step_setup(scaler_enabled=True)
    before = [p.detach().clone() for p in model.parameters()]
    overflow = model(torch.ones(1, 3)).sum() * float("inf")  # an fp16-style overflow: inf gradients
    norm, stepped = optimizer_step(model, overflow, optimizer, scheduler, scaler)
    assert not stepped and not math.isfinite(norm)
    assert scheduler.last_epoch == 0 and optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # schedule untouched
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # weights untouched
    assert scaler.get_scale() == 65536.0 / 2  # GradScaler backed off
    norm, stepped = optimizer_step(model, model(torch.ones(1, 3)).sum(), optimizer, scheduler, scaler)
    assert stepped and math.isfinite(norm) and norm > 0
    assert scheduler.last_epoch == 1 and optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert not torch.equal(before[0], model.weight)


def test_a_non_finite_gradient_with_a_finite_loss_updates_nothing():
    from edc_lab.train.training_step import optimizer_step

    model, optimizer, scheduler, scaler = _tiny_step_setup(scaler_enabled=False)
    before = [p.detach().clone() for p in model.parameters()]
    offset = model.weight - model.weight.detach()  # 0, with gradient 1
    loss = torch.sqrt(offset.abs()).sum()  # = 0, finite; d sqrt(x)/dx at 0 is inf: NaN/inf gradient
    assert math.isfinite(loss.item())
    norm, stepped = optimizer_step(model, loss, optimizer, scheduler, scaler, grad_clip=1.0)
    assert not stepped and not math.isfinite(norm) and scheduler.last_epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_non_finite_gradient_stops_the_run_naming_the_step(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = training_step.compute_losses

    def poisoned(outputs, *args, **kwargs):
        total, terms = real(outputs, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # finite loss, non-finite gradient
            logits = outputs["logits"]
            total = total + torch.sqrt((logits - logits.detach()).abs()).sum()
        return total, terms

    monkeypatch.setattr(training_step, "compute_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 3 of 4: the gradient norm is not finite.*last\.pt \(step 2\)"):
        train(make_config(stage="teacher", out=str(tmp_path), **TINY))
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())


def test_non_finite_weights_never_reach_a_checkpoint(tmp_path, monkeypatch):
    """--lr inf used to train, exit 0 and write NaN weights as the 'last good checkpoint'."""
    real = loop.build_scheduler

    def infinite_from_step_3(optimizer, config):  # the 3rd update uses lr = inf
        scheduler = real(optimizer, config)
        scheduler.lr_lambdas = [lambda step: float("inf") if step >= 2 else 1.0] * len(optimizer.param_groups)
        return scheduler

    monkeypatch.setattr(loop, "build_scheduler", infinite_from_step_3)
    with pytest.raises(NonFiniteLossError, match=r"step 3 of 4: after the update the weights are not finite .*"
                                                 r"Last checkpoint with finite weights: .*last\.pt \(step 2\)"):
        train(make_config(stage="teacher", out=str(tmp_path), **TINY))
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2] and all(math.isfinite(r["grad_norm"]) for r in history)


def test_lr_inf_from_the_first_step_names_no_checkpoint(tmp_path, monkeypatch):
    real = loop.build_optimizer

    def infinite(model, config):
        optimizer = real(model, config)
        for group in optimizer.param_groups:
            group["lr"] = float("inf")
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", infinite)
    monkeypatch.setattr(loop, "build_scheduler", lambda optimizer, config: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0))
    with pytest.raises(NonFiniteLossError, match=r"step 1 of 4: after the update the weights.*none written yet"):
        train(make_config(stage="teacher", out=str(tmp_path), **TINY))
    assert not (tmp_path / "last.pt").exists()


class _Unlabelled(torch.utils.data.Dataset):
    """A dataset whose labels are all 255 ("ignore")."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample = dict(self.dataset[index])
        sample["label"] = torch.full_like(sample["label"], 255)
        return sample

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def test_labels_that_are_all_ignore_stop_the_run(tmp_path, monkeypatch):
    real = loop.build_datasets
    monkeypatch.setattr(loop, "build_datasets", lambda config: tuple(_Unlabelled(d) for d in real(config)))
    with pytest.warns(UserWarning, match="no labelled pixel"):
        with pytest.raises(ValueError, match=r"first 2 training step\(s\) had no labelled pixel: every label is 255"):
            train(make_config(stage="teacher", out=str(tmp_path), **TINY))  # checkpoint_every=2
    assert not (tmp_path / "last.pt").exists()  # stopped before writing a useless checkpoint


def test_evaluate_warns_when_no_pixel_is_labelled():
    from edc_lab.data.datasets import build_dataset

    scenes = _Unlabelled(build_dataset("synthetic", split="val", size=32, count=2, seed=0))
    with pytest.warns(UserWarning, match="only 'ignore' \\(255\\) labels"):
        metrics = evaluate(build_model("edc_tiny"), scenes, batch_size=2)
    assert math.isnan(metrics["miou"]) and metrics["segmentation"]["all"]["pixels"] == 0


def test_resume_from_a_weights_only_export(tmp_path):
    from edc_lab.train.checkpoint import export_weights

    train(make_config(stage="teacher", out=str(tmp_path / "full"), **dict(TINY, steps=2)))
    export = export_weights(tmp_path / "full" / "last.pt", tmp_path / "export" / "last.pt")
    payload = read_checkpoint(export)
    assert payload["optimizer"] is None and payload["rng"] is None and payload["step"] == 2
    with pytest.warns(UserWarning, match="weights-only export .* fresh AdamW"):
        history = train(make_config(stage="teacher", out=str(tmp_path / "export"), resume=True, **TINY))
    lrs = {r["step"]: r["lr"] for r in history if r["split"] == "train"}
    assert lrs[3] == pytest.approx(1e-3 * lr_factor(3, 1, 4, TrainConfig().min_lr_ratio))  # schedule at step 2
    resumed = read_checkpoint(tmp_path / "export" / "last.pt")
    assert resumed["step"] == 4 and resumed["optimizer"] is not None  # a full checkpoint again


def test_resume_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    from edc_lab.train.checkpoint import CheckpointError, save_checkpoint

    train(make_config(stage="teacher", out=str(tmp_path), **dict(TINY, steps=2)))
    payload = read_checkpoint(tmp_path / "last.pt")
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name] = payload["model"][name] * float("nan")
    save_checkpoint(tmp_path / "last.pt", payload)
    with pytest.raises(CheckpointError, match=f"cannot resume: the weights are not finite \\({name}"):
        train(make_config(stage="teacher", out=str(tmp_path), resume=True, **TINY))



def test_multi_tensor_adamw_gives_the_same_weights_as_the_one_tensor_loop():
    # build_optimizer asks for foreach=True (PyTorch's default on the CPU is the per-tensor loop);
    # the speed-up is only worth having because the weights do not change, bit for bit
    torch.manual_seed(0)
    models = [build_model("edc_tiny"), build_model("edc_tiny")]
    models[1].load_state_dict(models[0].state_dict())
    start = {name: value.clone() for name, value in models[0].state_dict().items()}
    config = make_config(stage="teacher", model="edc_tiny", weight_decay=0.05, lr=3e-3)
    fast = loop.build_optimizer(models[0], config)
    assert [group["foreach"] for group in fast.param_groups] == [True, True]
    assert [group["weight_decay"] for group in fast.param_groups] == [0.05, 0.0]
    slow = loop.build_optimizer(models[1], config)
    for group in slow.param_groups:
        group["foreach"] = False  # what torch.optim.AdamW chooses on the CPU when not told
    generator = torch.Generator().manual_seed(1)
    optical, sar = torch.rand(2, 4, 32, 32, generator=generator), torch.randn(2, 2, 32, 32, generator=generator)
    for _ in range(3):
        for model, optimizer in zip(models, (fast, slow)):
            optimizer.zero_grad()
            model(optical, sar)["logits"].square().mean().backward()
            optimizer.step()
    after = [model.state_dict() for model in models]
    assert all(torch.equal(after[0][name], after[1][name]) for name in start)
    assert sum(not torch.equal(after[0][name], start[name]) for name in start) > 100  # the weights did move
