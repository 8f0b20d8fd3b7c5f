"""Plain ``nn.Module`` networks. Nothing in this package imports Lightning.

A net's first two arguments are its number of outputs and the shape of one input sample; the
training module fills them in from the data (or from a checkpoint) and the config gives the rest."""

from project.nets.backbone import BackboneAndHead
from project.nets.init import WeightInit, initialize_weights
from project.nets.lenet import LeNet, LeNetSequential
from project.nets.torchvision_classifier import TorchvisionClassifier
from project.nets.two_layer import TwoLayerNet

__all__ = ["BackboneAndHead", "LeNet", "LeNetSequential", "TorchvisionClassifier", "TwoLayerNet", "WeightInit", "initialize_weights"]
