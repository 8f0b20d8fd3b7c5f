"""Search hyperparameters of any config with Optuna, on this machine or a cluster, no account needed.

    python search.py --space configs/search/lenet_digits.yaml --trials 20 --config configs/lenet_digits.yaml
    python search.py --help

Every argument search.py does not know goes to `train.py fit`. The study is kept in
runs/search/<study>/study.db: the same command continues a stopped search.
"""

from project.__main__ import ROOMS
from project.tools.search import main

if __name__ == "__main__":
    main(rooms=ROOMS)
