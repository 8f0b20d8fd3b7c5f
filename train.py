"""Train, validate, test or predict with any config in configs/.

    python train.py fit --config configs/lenet_digits.yaml
    python train.py test --config configs/lenet_digits.yaml --ckpt_path <checkpoint>
    python train.py --help
"""

from project.__main__ import main

if __name__ == "__main__":
    main()
