"""``python -m project fit --config configs/lenet_digits.yaml``: the same command line as ``train.py``."""

from project.engine.cli import main

if __name__ == "__main__":
    main()
