"""``python -m project fit --config configs/lenet_digits.yaml``: the same command line as ``train.py``.

The entry point introduces the two halves: the tools (``project.tools``) know no room, and are
handed here the packages whose classes may be named by their short names (``--data MyData``)."""

from collections.abc import Sequence

ROOMS = ("project.nets", "project.lightning_modules", "project.datamodules")  # the folders a user edits


def main(args: Sequence[str] | None = None) -> None:
    from project.tools.cli import main as run

    run(None if args is None else list(args), rooms=ROOMS)


if __name__ == "__main__":
    main()
