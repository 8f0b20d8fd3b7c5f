"""The Lightning modules inside a real Trainer: logged numbers must equal numbers computed by hand."""

import csv
from functools import partial

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from project.datamodules import LoaderOptions, TensorDataModule
from project.errors import UserError
from project.lightning_modules import ClassificationModule, LRSchedule, RegressionModule
from project.nets import TwoLayerNet


def quiet_trainer(tmp_path, **kwargs) -> Trainer:
    options = dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, enable_progress_bar=False,
                   enable_model_summary=False, logger=False, enable_checkpointing=False)
    options.update(kwargs)
    return Trainer(**options)


def stacked(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(input, target)`` pairs of a split as two tensors."""
    inputs, targets = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(inputs), torch.stack(targets)


def test_logged_test_metrics_equal_metrics_computed_by_hand(tmp_path):
    seed_everything(0)
    dm = TensorDataModule(dataset="digits", standardize=True, loader=LoaderOptions(batch_size=50))
    module = ClassificationModule(partial(TwoLayerNet, hidden=16), num_classes=10, top_k=3)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, datamodule=dm)
    logged = trainer.test(module, datamodule=dm, verbose=False)[0]

    x, y = stacked(dm.test_set)
    with torch.no_grad():
        logits = module((x - dm.mean) / dm.std)
    assert logged["test/acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-6)
    top3 = (logits.topk(3, 1).indices == y[:, None]).any(1).float().mean().item()
    assert logged["test/top3_acc"] == pytest.approx(top3, abs=1e-6)
    assert logged["test/top3_acc"] > logged["test/acc"]  # a 16-unit net after 1 epoch is not perfect
    per_sample_loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert logged["test/loss"] == pytest.approx(per_sample_loss, rel=1e-5)  # exact mean over 359 samples


def test_confusion_matrix_is_written_with_class_names(tmp_path):
    seed_everything(0)
    dm = TensorDataModule(dataset="iris", standardize=True, loader=LoaderOptions(batch_size=16), val_fraction=0.2, test_fraction=0.2)
    module = ClassificationModule(partial(TwoLayerNet, hidden=16), num_classes=3)
    from lightning.pytorch.loggers import CSVLogger

    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=CSVLogger(tmp_path))
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    with open(f"{trainer.log_dir}/confusion_matrix.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ pred", "setosa", "versicolor", "virginica"]
    assert sum(int(c) for row in rows[1:] for c in row[1:]) == len(dm.test_set)
    truth = stacked(dm.test_set)[1]
    assert [sum(int(c) for c in row[1:]) for row in rows[1:]] == torch.bincount(truth, minlength=3).tolist()


def test_regression_metrics_are_mse_and_mae(tmp_path):
    path = tmp_path / "reg.pt"
    x = torch.randn(200, 3)
    torch.save({"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5]])}, path)
    seed_everything(0)
    dm = TensorDataModule(dataset=None, path=str(path), task="regression", loader=LoaderOptions(batch_size=32))
    module = RegressionModule(partial(TwoLayerNet, hidden=16), loss="mse", lr_schedule=LRSchedule(name="cosine"))
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, datamodule=dm)
    logged = trainer.test(module, datamodule=dm, verbose=False)[0]
    tx, ty = stacked(dm.test_set)
    with torch.no_grad():
        pred = module(tx)
    assert logged["test/mse"] == pytest.approx(((pred - ty) ** 2).mean().item(), rel=1e-5)
    assert logged["test/mae"] == pytest.approx((pred - ty).abs().mean().item(), rel=1e-5)
    assert logged["test/loss"] == pytest.approx(logged["test/mse"], rel=1e-5)


def test_lr_schedule_is_stepped_per_optimizer_step_by_lightning(tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    seed_everything(0)
    dm = TensorDataModule(dataset="iris", loader=LoaderOptions(batch_size=30), val_fraction=0.2, test_fraction=0.0)  # 4 steps/epoch
    optimizer = lambda params: torch.optim.SGD(params, lr=0.2)  # noqa: E731
    module = ClassificationModule(partial(TwoLayerNet, hidden=8), num_classes=3, optimizer=optimizer,
                                  lr_schedule=LRSchedule(name="step", step_size=1, gamma=0.5, warmup_epochs=1))
    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=CSVLogger(tmp_path), log_every_n_steps=1,
                            callbacks=[LearningRateMonitor(logging_interval="step")])
    trainer.fit(module, datamodule=dm)
    with open(f"{trainer.log_dir}/metrics.csv") as f:
        lrs = [float(row["lr-SGD"]) for row in csv.DictReader(f) if row.get("lr-SGD")]
    assert lrs == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])


def test_class_count_mismatches_are_named(tmp_path):
    dm = TensorDataModule(dataset="iris")
    with pytest.raises(UserError, match="the data has 3 classes \\(setosa, versicolor, virginica\\) but model.num_classes is 4"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(ClassificationModule(partial(TwoLayerNet, hidden=8), num_classes=4), datamodule=dm)
    with pytest.raises(UserError, match="the net outputs shape \\(5,\\) per sample but model.num_classes is 3"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(ClassificationModule(lambda outputs, shape: TwoLayerNet(5, shape, 8), num_classes=3), datamodule=dm)


def test_only_trainable_parameters_reach_the_optimizer(tmp_path):
    net = TwoLayerNet(3, (4,), 8)
    net.linear1.requires_grad_(False)
    module = ClassificationModule(lambda outputs, shape: net, num_classes=3)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, datamodule=TensorDataModule(dataset="iris"))
    params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)


def test_the_best_checkpoint_moves_to_a_later_epoch_that_ties_but_not_to_a_worse_one():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from project.engine.callbacks import LatestBestCheckpoint

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    for mode, best, tie, worse, better in (("max", 1.0, 1.0, 0.99, 1.01), ("min", 0.2, 0.2, 0.3, 0.1)):
        ours, lightnings = LatestBestCheckpoint(monitor="m", mode=mode), ModelCheckpoint(monitor="m", mode=mode)
        for callback in (ours, lightnings):
            callback.best_k_models, callback.kth_best_model_path = {"epoch0.ckpt": torch.tensor(best)}, "epoch0.ckpt"
        assert ours.check_monitor_top_k(trainer, torch.tensor(tie))
        assert not lightnings.check_monitor_top_k(trainer, torch.tensor(tie))  # Lightning keeps the first of a tie
        assert not ours.check_monitor_top_k(trainer, torch.tensor(worse))
        assert ours.check_monitor_top_k(trainer, torch.tensor(better))


class PlainData(LightningDataModule):
    """A plain Lightning data module: ``(x, y)`` batches, no loss weights, no sizes."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(40, 6, generator=generator), torch.randint(0, 3, (40,), generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[:32], self.y[:32]), batch_size=8)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[32:], self.y[32:]), batch_size=8)


def test_a_plain_lightning_data_module_trains_with_the_mean_loss_of_each_batch(tmp_path):
    """Without weights in the batch every sample of a batch weighs alike: the step's loss is the
    batch's mean loss, and one SGD step moves the weights as the mean loss's gradient does."""
    seed_everything(0)
    module = ClassificationModule(net=partial(TwoLayerNet, hidden=4), num_classes=3, input_shape=[6],
                                  optimizer=partial(torch.optim.SGD, lr=0.5))
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    quiet_trainer(tmp_path, max_steps=1, num_sanity_val_steps=0).fit(module, datamodule=PlainData())
    net = TwoLayerNet(3, (6,), hidden=4)
    net.load_state_dict(before)
    data = PlainData()
    torch.nn.functional.cross_entropy(net(data.x[:8]), data.y[:8]).backward()
    for name, parameter in net.named_parameters():
        expected = parameter.detach() - 0.5 * parameter.grad
        assert torch.allclose(module.net.state_dict()[name], expected, atol=1e-6), name
    with pytest.raises(UserError, match="PlainData does not say the net's size: set model.num_classes"):
        quiet_trainer(tmp_path, max_steps=1).fit(ClassificationModule(net=TwoLayerNet), datamodule=PlainData())
