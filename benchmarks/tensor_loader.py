"""Loader-only throughput on the digits tensors: fast tensor batches vs the per-sample DataLoader.

    python benchmarks/tensor_loader.py [--epochs 200] [--batch-size 64]

Both iterate the same training split (1,258 digits upscaled to 1x32x32, as in
configs/lenet_digits.yaml) in the same seeded order; nothing else runs. Prints samples/s of
each and their ratio (goal: >= 5x).
"""

import argparse
import time

import torch

from project.datamodules import LoaderOptions, TensorDataModule


def samples_per_second(loader, epochs: int) -> float:
    start, samples = time.perf_counter(), 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for x, _ in loader:
            samples += len(x)
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    rates = {}
    for name, fast in (("DataLoader (per sample)", False), ("fast tensor batches", True)):
        data = TensorDataModule(dataset="digits", input_shape=[1, 8, 8], resize_to=32, fast_batches=fast,
                                loader=LoaderOptions(batch_size=args.batch_size))
        data.setup("fit")
        loader = data.train_dataloader()
        samples_per_second(loader, 2)  # warm-up
        rates[name] = samples_per_second(loader, args.epochs)
        print(f"{name:>24}: {rates[name]:12,.0f} samples/s", flush=True)
    ratio = rates["fast tensor batches"] / rates["DataLoader (per sample)"]
    print(f"{'ratio':>24}: {ratio:12.1f}x  (goal >= 5x; {len(data.train_set)} samples of 1x32x32, batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
