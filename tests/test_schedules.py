"""Every schedule option against the curve its docstring documents (and torch's own scheduler)."""

import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR, OneCycleLR, StepLR

from project.errors import UserError
from project.engine.schedules import LRSchedule, build_schedulers

BASE_LR, STEPS_PER_EPOCH, EPOCHS = 0.1, 4, 12


def optimizer(kind: str = "sgd") -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1))]
    if kind == "adam":
        return torch.optim.AdamW(params, lr=BASE_LR)
    return torch.optim.SGD(params, lr=BASE_LR, momentum=0.9)


def lr_per_step(schedule: LRSchedule, kind: str = "sgd") -> list[float]:
    """The learning rate used by each optimizer step, stepping the schedulers as Lightning does."""
    opt = optimizer(kind)
    configs = build_schedulers(opt, schedule, STEPS_PER_EPOCH, EPOCHS)
    used = []
    for _ in range(STEPS_PER_EPOCH * EPOCHS):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        for config in configs:
            if config["interval"] == "step":
                config["scheduler"].step()
    return used


def torch_epoch_curve(make) -> list[float]:
    """Per-epoch lrs of a torch scheduler stepped once per epoch, repeated for each step of the epoch."""
    opt = optimizer()
    scheduler = make(opt)
    used = []
    for _ in range(EPOCHS):
        used += [opt.param_groups[0]["lr"]] * STEPS_PER_EPOCH
        opt.step()
        scheduler.step()
    return used


def test_step_schedule_matches_steplr_stepped_per_epoch():
    ours = lr_per_step(LRSchedule(name="step", step_size=5, gamma=0.1))
    assert ours == pytest.approx(torch_epoch_curve(lambda o: StepLR(o, step_size=5, gamma=0.1)))
    assert ours[0] == pytest.approx(0.1) and ours[5 * STEPS_PER_EPOCH] == pytest.approx(0.01)


def test_multistep_schedule_matches_multisteplr():
    ours = lr_per_step(LRSchedule(name="multistep", milestones=[3, 8], gamma=0.5))
    assert ours == pytest.approx(torch_epoch_curve(lambda o: MultiStepLR(o, milestones=[3, 8], gamma=0.5)))


def test_cosine_with_zero_floor_matches_cosineannealinglr_at_every_epoch_start():
    ours = lr_per_step(LRSchedule(name="cosine"))
    theirs = torch_epoch_curve(lambda o: CosineAnnealingLR(o, T_max=EPOCHS))
    epoch_starts = range(0, STEPS_PER_EPOCH * EPOCHS, STEPS_PER_EPOCH)
    assert [ours[i] for i in epoch_starts] == pytest.approx([theirs[i] for i in epoch_starts])


def test_cosine_with_floor_follows_the_seeds_formula_at_every_step():
    lrf = 0.2
    ours = lr_per_step(LRSchedule(name="cosine", lrf=lrf))
    for step, lr in enumerate(ours):
        x = step / STEPS_PER_EPOCH
        assert lr == pytest.approx(BASE_LR * (((1 + math.cos(x * math.pi / EPOCHS)) / 2) * (1 - lrf) + lrf))


def test_linear_warmup_then_cosine():
    warmup = 2
    ours = lr_per_step(LRSchedule(name="cosine", warmup_epochs=warmup))
    warmup_steps = warmup * STEPS_PER_EPOCH
    for step in range(warmup_steps):
        assert ours[step] == pytest.approx(BASE_LR * (step + 1) / warmup_steps)
    for step in range(warmup_steps, len(ours)):
        x = (step - warmup_steps) / STEPS_PER_EPOCH
        assert ours[step] == pytest.approx(BASE_LR * (1 + math.cos(math.pi * x / (EPOCHS - warmup))) / 2)


def test_warmup_with_no_schedule_rises_then_holds():
    ours = lr_per_step(LRSchedule(name="none", warmup_epochs=1))
    assert ours[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert ours[4:] == pytest.approx([BASE_LR] * (len(ours) - 4))


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_onecycle_matches_torch_onecycle_over_all_steps(kind):
    schedule = LRSchedule(name="onecycle", pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    ours = lr_per_step(schedule, kind)
    opt = optimizer(kind)
    reference = OneCycleLR(opt, max_lr=BASE_LR, total_steps=STEPS_PER_EPOCH * EPOCHS, pct_start=0.25,
                           div_factor=10.0, final_div_factor=100.0)
    theirs = []
    for _ in range(STEPS_PER_EPOCH * EPOCHS):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        reference.step()
    assert ours == pytest.approx(theirs)
    assert max(ours) == pytest.approx(BASE_LR) and ours[0] == pytest.approx(BASE_LR / 10)


def test_plateau_reduces_after_patience_epochs_without_improvement_and_can_warm_up():
    opt = optimizer()
    configs = build_schedulers(opt, LRSchedule(name="plateau", patience=2, factor=0.5, warmup_epochs=1),
                               STEPS_PER_EPOCH, EPOCHS)
    warmup, plateau = configs[0]["scheduler"], configs[1]["scheduler"]
    assert configs[1]["monitor"] == "val/loss" and configs[1]["interval"] == "epoch"
    lrs = []
    for epoch, metric in enumerate([1.0, 0.9, 0.9, 0.9, 0.9, 0.9]):
        for _ in range(STEPS_PER_EPOCH):
            opt.step()
            warmup.step()
        plateau.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    # improved at epochs 0-1, then 2 epochs of patience, cut at the 3rd stall, patience again.
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(name="exponential"), "unknown lr schedule 'exponential'"),
        (dict(name="onecycle", warmup_epochs=1), "onecycle has its own warm-up"),
        (dict(name="plateau", mode="up"), "plateau mode must be min or max"),
        (dict(warmup_epochs=-1), "warmup_epochs must be >= 0"),
    ],
)
def test_bad_schedules_are_refused(options, message):
    with pytest.raises(UserError, match=message):
        LRSchedule(**options)


def test_cosine_needs_more_epochs_than_warmup():
    with pytest.raises(UserError, match="max_epochs > warmup_epochs"):
        build_schedulers(optimizer(), LRSchedule(name="cosine", warmup_epochs=12), STEPS_PER_EPOCH, 12)
