from functools import partial

import pytest
import torch

from project.errors import UserError
from project.lightning_modules import ClassificationModule, RegressionModule
from project.lightning_modules.losses import CLASSIFICATION_LOSSES, build_loss
from project.nets import TwoLayerNet

CLASSIFICATION_CASES = {
    "cross_entropy": dict(loss="cross_entropy", num_classes=4),
    "cross_entropy_weighted": dict(loss="cross_entropy", num_classes=4, class_weights=[1.0, 2.0, 0.5, 1.0]),
    "cross_entropy_smoothed": dict(loss="cross_entropy", num_classes=4, label_smoothing=0.1),
    "nll": dict(loss="nll", num_classes=4),
    "bce_binary": dict(loss="bce_with_logits", num_classes=1),
    "bce_multilabel": dict(loss="bce_with_logits", num_classes=4),
}


def fixed_batch(kind: str, n: int = 32, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=generator)
    if kind == "bce_binary":
        return x, (x[:, 0] > 0).long()
    if kind == "bce_multilabel":
        return x, (x[:, :4] > 0).long()
    if kind == "regression":
        return x, x[:, :2] * 3 + 1
    return x, torch.randint(0, 4, (n,), generator=generator)


def losses_while_training(module, batch, steps: int = 60) -> tuple[float, float]:
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    first = None
    for _ in range(steps):
        loss = module.evaluate(*batch)[0].mean()  # one loss per sample
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return first, module.evaluate(*batch)[0].mean().item()


@pytest.mark.parametrize("case", list(CLASSIFICATION_CASES))
def test_every_classification_loss_falls_on_a_small_batch(case):
    torch.manual_seed(0)
    options = CLASSIFICATION_CASES[case]
    module = ClassificationModule(partial(TwoLayerNet, hidden=32), input_shape=[8], **options)
    first, last = losses_while_training(module, fixed_batch(case))
    assert last < 0.5 * first


@pytest.mark.parametrize("loss", ["mse", "l1", "smooth_l1", "huber"])
def test_every_regression_loss_falls_on_a_small_batch(loss):
    torch.manual_seed(0)
    module = RegressionModule(partial(TwoLayerNet, hidden=32), num_outputs=2, input_shape=[8], loss=loss)
    first, last = losses_while_training(module, fixed_batch("regression"))
    assert last < 0.5 * first


def test_task_follows_from_loss_and_class_count():
    assert ClassificationModule(partial(TwoLayerNet, hidden=4), input_shape=[8], num_classes=4).task == "multiclass"
    assert ClassificationModule(partial(TwoLayerNet, hidden=4), input_shape=[8], num_classes=1, loss="bce_with_logits").task == "binary"
    assert ClassificationModule(partial(TwoLayerNet, hidden=4), input_shape=[8], num_classes=4, loss="bce_with_logits").task == "multilabel"


def test_nll_on_logits_equals_cross_entropy():
    logits, target = torch.randn(10, 5), torch.randint(0, 5, (10,))
    nll = build_loss("nll", CLASSIFICATION_LOSSES)(logits, target)
    assert torch.allclose(nll, torch.nn.functional.cross_entropy(logits, target, reduction="none"))  # one per sample
    log_probs = logits.log_softmax(-1)  # a net that already ends in log_softmax gets the same loss
    assert torch.allclose(build_loss("nll", CLASSIFICATION_LOSSES)(log_probs, target), nll)


def test_class_weights_and_label_smoothing_reach_the_loss():
    loss = build_loss("cross_entropy", CLASSIFICATION_LOSSES, class_weights=[1.0, 3.0], label_smoothing=0.2)
    assert loss.weight.tolist() == [1.0, 3.0] and loss.label_smoothing == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(loss="hinge", num_classes=3), "unknown loss 'hinge'"),
        (dict(loss="mse", num_classes=3), "unknown loss 'mse'"),
        (dict(loss="nll", num_classes=3, label_smoothing=0.1), "label_smoothing applies to cross_entropy only"),
        (dict(num_classes=3, class_weights=[1.0, 2.0]), "class_weights has 2 entries but num_classes is 3"),
        (dict(num_classes=1), "binary task: use loss: bce_with_logits"),
    ],
)
def test_bad_loss_options_are_refused_with_a_named_cause(kwargs, message):
    with pytest.raises(UserError, match=message):
        ClassificationModule(partial(TwoLayerNet, hidden=4), input_shape=[8], **kwargs)
