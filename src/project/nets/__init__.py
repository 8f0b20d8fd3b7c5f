"""Plain ``nn.Module`` networks. Nothing in this package imports Lightning."""

from project.nets.init import WeightInit, initialize_weights
from project.nets.lenet import LeNet, LeNetSequential
from project.nets.torchvision_classifier import TorchvisionClassifier
from project.nets.two_layer import TwoLayerNet

__all__ = ["LeNet", "LeNetSequential", "TorchvisionClassifier", "TwoLayerNet", "WeightInit", "initialize_weights"]
