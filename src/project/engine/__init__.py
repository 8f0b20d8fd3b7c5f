"""The engine: everything a fork of this template can leave alone.

The rooms a user works in are ``project.nets`` (plain ``nn.Module``s), ``project.lightning_modules``
(loss and metrics around a net) and ``project.datamodules`` (where the data comes from). The engine
owns the rest: the two contracts the rooms build on (``data.ProjectDataModule``: loaders, DDP
shards, per-sample weights, exact mid-epoch resume; ``module.TrainingModule``: a net sized by the
data, optimizer and lr schedule, per-sample loss weighting), what every run leaves behind (loggers,
``record.json``, curves, the confusion matrix, predictions), checkpoints and stopping on a signal,
the multi-process helpers, ``export`` (a checkpoint as ONNX, checked against the model; the
``trainer``'s ``export`` subcommand), what a config or checkpoint may name (``kinds``), and the tools on
top: the command line (``cli``, ``arguments``), many runs at once (``processes``, ``search``,
``seeds``), and a checkpoint in a notebook (``predictor``).

Imports run one way. The foundation (every module here but those six) imports nothing from the
rooms; the rooms import the foundation; ``cli``, ``arguments``, ``processes``, ``search``,
``seeds`` and ``predictor`` stand on both. ``tests/test_layout.py`` checks this, and that there is no circle.
Every reach into another library's private names or message texts is in ``internals``.
"""
