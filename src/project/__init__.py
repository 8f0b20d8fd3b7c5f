"""A PyTorch Lightning template: plain nets, Lightning modules that train them, data modules that feed them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("project")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
