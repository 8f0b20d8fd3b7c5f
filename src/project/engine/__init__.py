"""The engine: the floor the rooms stand on, which a fork of this template can leave alone.

The rooms a user works in are ``project.nets`` (plain ``nn.Module``s), ``project.lightning_modules``
(a net trained with a loss, metrics and an optimizer) and ``project.datamodules`` (where the data
comes from). The engine owns the rest of a run: the data contract (``data.ProjectDataModule``:
loaders, DDP shards, per-sample weights, exact mid-epoch resume), what every run leaves behind
(loggers, ``record.json``, curves, the confusion matrix, predictions), checkpoints, resume and
stopping on a signal, the multi-process helpers, and what a config or checkpoint may name (``kinds``).

Nothing here imports a room or a tool (``project.tools``, above the rooms); ``tests/test_layout.py``
checks it. Every reach into another library's private names or message texts is in ``internals``.
"""
