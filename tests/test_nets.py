import math

import pytest
import torch

from project.errors import UserError
from project.nets import LeNet, LeNetSequential, TwoLayerNet, initialize_weights


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_lenet_has_the_seeds_parameter_count_for_1x32x32_and_10_classes():
    assert count(LeNet(10, (1, 32, 32))) == 61_706
    assert count(LeNetSequential(10, (1, 32, 32))) == 61_706


@pytest.mark.parametrize("net_class", [LeNet, LeNetSequential])
@pytest.mark.parametrize(("channels", "size", "fc_in"), [(1, 32, 400), (3, 32, 400), (1, 28, 256), (3, 28, 256)])
def test_lenet_shapes_for_28_and_32_pixel_gray_and_rgb_inputs(net_class, channels, size, fc_in):
    net = net_class(7, (channels, size, size))
    out = net(torch.randn(5, channels, size, size))
    assert out.shape == (5, 7)
    first_linear = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert first_linear.in_features == fc_in


def test_lenet_sequential_exposes_features_and_classifier_blocks():
    net = LeNetSequential(2, (3, 32, 32))
    features = net.features(torch.randn(4, 3, 32, 32))
    assert features.shape == (4, 16, 5, 5)
    assert net.classifier(features.flatten(1)).shape == (4, 2)


def test_lenet_rejects_inputs_too_small_to_convolve_and_inputs_that_are_not_images():
    with pytest.raises(UserError, match="at least 16x16 pixels, got 12x20"):
        LeNet(10, (1, 12, 20))
    with pytest.raises(UserError, match="LeNet takes images .* shape \\(64,\\)"):
        LeNet(10, (64,))


def test_two_layer_net_shapes_and_parameter_count():
    net = TwoLayerNet(10, (1000,), hidden=100)
    assert net(torch.randn(64, 1000)).shape == (64, 10)
    assert count(net) == 1000 * 100 + 100 + 100 * 10 + 10
    assert TwoLayerNet(10, (1, 8, 8), 32)(torch.randn(3, 1, 8, 8)).shape == (3, 10)  # images are flattened


def test_default_init_keeps_pytorch_initialisation():
    torch.manual_seed(0)
    reference = LeNet(10, (1, 32, 32))
    torch.manual_seed(0)
    same = LeNet(10, (1, 32, 32), init="default")
    for a, b in zip(reference.parameters(), same.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
def test_init_schemes_zero_biases_and_set_the_documented_weight_scale(scheme):
    torch.manual_seed(0)
    net = TwoLayerNet(10, (2000,), hidden=500, init=scheme)
    assert torch.count_nonzero(net.linear1.bias) == 0
    fan_in, fan_out = 2000, 500
    expected_std = math.sqrt(2.0 / (fan_in + fan_out)) if scheme == "xavier" else math.sqrt(2.0 / fan_in)
    assert net.linear1.weight.std().item() == pytest.approx(expected_std, rel=0.02)


def test_unknown_init_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown weight init"):
        initialize_weights(TwoLayerNet(2, (4,), 4), "orthogonal")  # type: ignore[arg-type]
