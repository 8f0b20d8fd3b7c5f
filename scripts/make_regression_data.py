"""Write a synthetic regression set for configs/two_layer_regression.yaml.

    python scripts/make_regression_data.py data/regression.pt [--samples 8192]

Targets are a fixed random two-layer function of the inputs plus a little noise, so a
two-layer net can fit them (pure noise would leave nothing to learn).
"""

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--d-in", type=int, default=1000)
    parser.add_argument("--d-out", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.samples, args.d_in, generator=generator)
    hidden = torch.relu(x @ torch.randn(args.d_in, 32, generator=generator) / args.d_in**0.5)
    y = hidden @ torch.randn(32, args.d_out, generator=generator) + 0.01 * torch.randn(args.samples, args.d_out, generator=generator)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x, "y": y}, args.output)
    print(f"wrote {args.samples} samples ({args.d_in} -> {args.d_out}) to {args.output}")


if __name__ == "__main__":
    main()
