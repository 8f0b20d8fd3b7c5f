"""Train and test a config over several seeds; print and save each metric's mean, std, min and max.

    python seeds.py --seeds 0 1 2 --config configs/lenet_digits.yaml
    python seeds.py --folds 5 --seeds 100 --config configs/lenet_digits.yaml   # k-fold cross-validation
    python seeds.py --help

Every argument seeds.py does not know goes to `train.py fit`. Runs, summary.csv and seeds.csv go
to runs/seeds/<run name>/version_N/.
"""

from project.__main__ import ROOMS
from project.tools.seeds import main

if __name__ == "__main__":
    main(rooms=ROOMS)
