from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_image_tree, make_mnist_files, write_png
from project.datamodules import (
    BatchAffine,
    ImageFolderDataModule,
    ImageTransforms,
    LoaderOptions,
    TensorDataModule,
    TorchvisionDataModule,
)
from project.datamodules.splits import split_sizes, stratified_split
from project.datamodules.tensor_batches import StackedTensors
from project.errors import UserError


def set_up(datamodule, stage: str = "fit"):
    datamodule.setup(stage)
    return datamodule


# --- tensors -------------------------------------------------------------------------------------


def test_digits_split_sizes_shapes_and_class_names():
    dm = set_up(TensorDataModule(dataset="digits", input_shape=[1, 8, 8], resize_to=32))
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == [1258, 180, 359]
    x, y = dm.train_set[0]
    assert x.shape == (1, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == torch.long
    assert dm.class_names == [str(i) for i in range(10)] and dm.num_classes == 10


def test_flat_digits_and_iris():
    digits = set_up(TensorDataModule(dataset="digits"))
    assert digits.train_set[0][0].shape == (64,)
    iris = set_up(TensorDataModule(dataset="iris", val_fraction=0.2, test_fraction=0.2))
    assert [len(iris.train_set), len(iris.val_set), len(iris.test_set)] == [90, 30, 30]
    assert iris.class_names == ["setosa", "versicolor", "virginica"]


def test_split_is_seeded_and_disjoint():
    first = set_up(TensorDataModule(dataset="digits", split_seed=3))
    again = set_up(TensorDataModule(dataset="digits", split_seed=3))
    other = set_up(TensorDataModule(dataset="digits", split_seed=4))
    assert first.test_set.indices == again.test_set.indices
    assert first.test_set.indices != other.test_set.indices
    parts = [set(s.indices) for s in (first.train_set, first.val_set, first.test_set)]
    assert sum(map(len, parts)) == 1797 and len(set.union(*parts)) == 1797


def test_split_sizes_round_in_favour_of_training():
    assert split_sizes(10, 0.15, 0.15) == [6, 2, 2]
    with pytest.raises(UserError, match="val_fraction \\+ test_fraction"):
        split_sizes(10, 0.6, 0.5)


def test_standardize_uses_training_statistics_and_applies_to_every_batch():
    dm = set_up(TensorDataModule(dataset="iris", standardize=True))
    train_x = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    out = dm.on_after_batch_transfer([train_x, torch.zeros(len(train_x))], 0)[0]
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.std(0), torch.ones(4), atol=1e-5)


def test_batch_affine_moves_pixels_but_keeps_shape_and_identity_is_exact():
    torch.manual_seed(0)
    images = torch.rand(8, 1, 32, 32)
    moved = BatchAffine(degrees=15, translate=0.1)(images)
    assert moved.shape == images.shape and not torch.allclose(moved, images)
    still = BatchAffine(degrees=0, translate=0, scale_min=1, scale_max=1)(images)
    assert torch.allclose(still, images, atol=1e-5)


def test_expand_train_to_adds_affine_copies_of_training_images_only():
    options = dict(dataset="digits", input_shape=[1, 8, 8], resize_to=28)
    plain = set_up(TensorDataModule(**options))
    grown = set_up(TensorDataModule(**options, expand_train_to=5000))
    again = set_up(TensorDataModule(**options, expand_train_to=5000))
    (x, y), (x0, y0) = grown.train_set.tensors, plain.train_set.tensors
    n = len(x0)
    assert x.shape == (5000, 1, 28, 28) and len(y) == 5000
    assert torch.equal(x[:n], x0) and torch.equal(y[:n], y0)  # the real training images come first
    sources = torch.arange(5000 - n) % n
    assert torch.equal(y[n:], y0[sources])  # each copy keeps its source's label
    assert (x[n:] - x0[sources]).abs().amax(dim=(1, 2, 3)).gt(1e-3).float().mean() > 0.95  # and is moved
    assert torch.equal(x, again.train_set.tensors[0])  # the same set every run
    assert torch.equal(grown.val_set.tensors[0], plain.val_set.tensors[0])  # evaluation stays real
    assert torch.equal(grown.test_set.tensors[0], plain.test_set.tensors[0])
    with pytest.raises(UserError, match="expand_train_to=100 is smaller than the training split"):
        set_up(TensorDataModule(**options, expand_train_to=100))


@pytest.mark.parametrize("suffix", [".pt", ".pt-tuple", ".npz", ".npy", ".csv"])
def test_tensor_files_of_every_format_load_the_same_numbers(tmp_path, suffix):
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.arange(10) % 3
    path = tmp_path / f"data{suffix.split('-')[0]}"
    if suffix == ".pt":
        torch.save({"x": torch.tensor(x), "y": torch.tensor(y)}, path)
    elif suffix == ".pt-tuple":
        torch.save((torch.tensor(x), torch.tensor(y)), path)
    elif suffix == ".npz":
        np.savez(path, x=x, y=y)
    elif suffix == ".npy":
        np.save(path, np.column_stack([x, y]))
    else:
        path.write_text("a,b,c,d,label\n" + "\n".join(",".join(map(str, [*r, t])) for r, t in zip(x, y)))
    dm = TensorDataModule(dataset=None, path=str(path), val_fraction=0.2, test_fraction=0.2)
    inputs, targets = dm.load()
    assert torch.equal(inputs, torch.tensor(x)) and torch.equal(targets, torch.tensor(y))
    assert dm.class_names == ["0", "1", "2"]


def test_regression_targets_are_float_columns(tmp_path):
    path = tmp_path / "reg.pt"
    torch.save({"x": torch.randn(20, 5), "y": torch.randn(20)}, path)
    _, targets = TensorDataModule(dataset=None, path=str(path), task="regression").load()
    assert targets.shape == (20, 1) and targets.dtype == torch.float32


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ({"x": torch.zeros(10, 3), "y": torch.zeros(9)}, {}, "inputs and targets differ in length \\(10 inputs, 9 targets\\)"),
        ({"inputs": torch.zeros(10, 3)}, {}, "keys \\['x', 'y'\\] not found"),
        ({"x": torch.zeros(10, 3), "y": torch.full((10,), 0.5)}, {}, "whole class indices"),
        ({"x": torch.zeros(10, 3), "y": torch.zeros(10)}, {"input_shape": [2, 2]}, "cannot reshape inputs"),
    ],
)
def test_bad_tensor_files_are_refused_with_the_cause(tmp_path, content, options, message):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match=message):
        TensorDataModule(dataset=None, path=str(path), **options).load()


def test_missing_garbage_and_unknown_tensor_sources(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        TensorDataModule(dataset=None, path=str(tmp_path / "none.pt")).load()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="cannot read data file .*garbage.pt"):
        TensorDataModule(dataset=None, path=str(garbage)).load()
    with pytest.raises(UserError, match="unknown built-in dataset 'mnist'"):
        TensorDataModule(dataset="mnist").load()
    with pytest.raises(UserError, match="exactly one of"):
        TensorDataModule(dataset="digits", path="x.pt")


def test_balanced_sampler_draws_classes_equally_often(tmp_path):
    path = tmp_path / "imbalanced.pt"
    targets = torch.tensor([0] * 180 + [1] * 20)
    torch.save({"x": torch.randn(200, 2), "y": targets}, path)
    torch.manual_seed(0)
    dm = set_up(TensorDataModule(dataset=None, path=str(path), val_fraction=0, test_fraction=0,
                                 loader=LoaderOptions(balance_classes=True, batch_size=50)))
    drawn = torch.cat([y for _, y in dm.train_dataloader()])
    counts = Counter(drawn.tolist())
    assert len(drawn) == 200 and abs(counts[0] - counts[1]) < 40  # ~100 each instead of 180/20


# --- image folders -------------------------------------------------------------------------------


def test_one_tree_is_split_per_class_and_mixed_gray_rgb_load_alike(image_tree):
    dm = set_up(ImageFolderDataModule(str(image_tree), transforms=ImageTransforms(image_size=16, channels=3)))
    assert dm.class_names == ["cat", "dog"]
    sizes = {split: Counter(t for _, t in samples) for split, samples in dm.split_samples.items()}
    assert sizes == {"train": {0: 14, 1: 14}, "val": {0: 3, 1: 3}, "test": {0: 3, 1: 3}}
    shapes = {dm.train_set[i][0].shape for i in range(len(dm.train_set))}
    assert shapes == {torch.Size([3, 16, 16])}
    gray = set_up(ImageFolderDataModule(str(image_tree), transforms=ImageTransforms(image_size=16, channels=1)))
    assert gray.val_set[0][0].shape == (1, 16, 16)


def test_image_split_is_seeded(image_tree):
    a = set_up(ImageFolderDataModule(str(image_tree), split_seed=1)).split_samples["test"]
    b = set_up(ImageFolderDataModule(str(image_tree), split_seed=1)).split_samples["test"]
    c = set_up(ImageFolderDataModule(str(image_tree), split_seed=2)).split_samples["test"]
    assert a == b and a != c


def test_stratified_split_keeps_a_rare_class_in_every_split():
    targets = [0] * 90 + [1] * 10
    train, val, test = stratified_split(targets, 0.2, 0.2, seed=0)
    assert [sum(targets[i] for i in part) for part in (train, val, test)] == [6, 2, 2]


def test_train_val_test_folders_are_used_as_given(tmp_path):
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        make_image_tree(tmp_path / split, per_class=count)
    dm = set_up(ImageFolderDataModule(str(tmp_path)))
    assert {k: len(v) for k, v in dm.split_samples.items()} == {"train": 12, "val": 4, "test": 6}


def test_train_folder_alone_is_cut_into_val_and_test(tmp_path):
    make_image_tree(tmp_path / "train", per_class=10)
    dm = set_up(ImageFolderDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.1))
    assert {k: len(v) for k, v in dm.split_samples.items()} == {"train": 14, "val": 4, "test": 2}


def test_corrupt_image_is_named_or_skipped(image_tree):
    bad = image_tree / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(UserError, match=f"unreadable image file\\(s\\): {bad}"):
        set_up(ImageFolderDataModule(str(image_tree)))
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        dm = set_up(ImageFolderDataModule(str(image_tree), skip_bad_images=True))
    assert all(path != str(bad) for split in dm.split_samples.values() for path, _ in split)
    unchecked = set_up(ImageFolderDataModule(str(image_tree), check_images=False, val_fraction=0, test_fraction=0))
    position = [p for p, _ in unchecked.split_samples["train"]].index(str(bad))
    with pytest.raises(UserError, match=f"cannot read image {bad}"):
        unchecked.train_set[position]


def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(UserError, match="image folder not found: .*nowhere"):
        set_up(ImageFolderDataModule(str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no class folder in it"):
        set_up(ImageFolderDataModule(str(tmp_path / "empty")))
    (tmp_path / "no_images" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="no_images.*Found no valid file"):
        set_up(ImageFolderDataModule(str(tmp_path / "no_images")))


def test_predict_set_lists_files_in_order_with_their_index(image_tree, tmp_path):
    """A row's index is its position in predict_set (Lightning's predict loop tracks it beside the
    batch), not a value in the batch where a target could be mistaken for it."""
    for i in range(3):
        write_png(tmp_path / "new" / f"img{i}.png", i % 2, "RGB")
    dm = set_up(ImageFolderDataModule(str(image_tree), predict_dir=str(tmp_path / "new")), "predict")
    assert [Path(p).name for p in dm.predict_names] == ["img0.png", "img1.png", "img2.png"]
    assert Path(dm.predict_set.samples[2][0]).name == "img2.png" and dm.predict_set[2][1] == -1  # no class known


def test_transform_options_are_checked():
    with pytest.raises(UserError, match="mean has 3 values but channels is 1"):
        ImageTransforms(channels=1, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    with pytest.raises(UserError, match="channels must be 1 or 3"):
        ImageTransforms(channels=2)


# --- torchvision datasets ------------------------------------------------------------------------


def test_mnist_idx_files_are_read_through_torchvision(tmp_path):
    make_mnist_files(tmp_path)
    dm = set_up(TorchvisionDataModule("mnist", root=str(tmp_path), val_fraction=0.1,
                                      transforms=ImageTransforms(image_size=28, channels=1)))
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == [54, 6, 20]
    x, y = dm.test_set[3]
    assert x.shape == (1, 28, 28) and y == 3
    assert x[0, 8:12, 4:24].min() == 1.0  # the bar written for label 3 survives the round trip
    assert dm.class_names[0] == "0 - zero"


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("cifar10", "cifar-10-batches-py")])
def test_missing_torchvision_files_say_where_to_put_them(tmp_path, name, folder):
    dm = TorchvisionDataModule(name, root=str(tmp_path))
    with pytest.raises(UserError, match=f"(?s){name} files not found under {tmp_path}.*{tmp_path}/{folder}"):
        dm.setup("fit")


def _batches_of(loader, epoch: int) -> list[list[torch.Tensor]]:
    if loader.sampler is not None and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return [list(batch) for batch in loader]


@pytest.mark.parametrize("world_size", [1, 2])
def test_fast_tensor_batches_equal_the_dataloader_batches_on_every_rank_and_epoch(world_size):
    class Ranks:
        accumulate_grad_batches = 1

    fast = TensorDataModule(dataset="digits", loader=LoaderOptions(global_batch_size=64))
    slow = TensorDataModule(dataset="digits", fast_batches=False, loader=LoaderOptions(global_batch_size=64))
    for module in (fast, slow):
        module.setup("fit")
    seen = []
    for rank in range(world_size):
        Ranks.world_size, Ranks.global_rank = world_size, rank
        fast.trainer = slow.trainer = Ranks()  # type: ignore[assignment]
        for make in ("train_dataloader", "val_dataloader"):
            fast_loader, slow_loader = getattr(fast, make)(), getattr(slow, make)()
            assert isinstance(fast_loader.dataset, StackedTensors) and len(fast_loader) == len(slow_loader)
            for epoch in (0, 1):
                fast_batches, slow_batches = _batches_of(fast_loader, epoch), _batches_of(slow_loader, epoch)
                assert len(fast_batches) == len(slow_batches)
                for ours, theirs in zip(fast_batches, slow_batches):
                    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
            if make == "val_dataloader":
                seen.append(torch.cat([b[1] for b in fast_batches]))
    assert sum(len(s) for s in seen) == len(fast.val_set)  # evaluation shards: every sample once


def test_fast_tensor_batches_reshuffle_each_epoch_and_drop_the_last_short_batch():
    data = TensorDataModule(dataset="iris", val_fraction=0.0, test_fraction=0.0,
                            loader=LoaderOptions(batch_size=40, drop_last=True))
    data.setup("fit")
    loader = data.train_dataloader()
    assert len(loader) == 3  # 150 samples: three full batches of 40, the last 30 dropped
    first, second = _batches_of(loader, 0), _batches_of(loader, 1)
    assert [len(b[0]) for b in first] == [40, 40, 40]
    assert not torch.equal(first[0][0], second[0][0])


def test_standardize_works_per_input_element_for_inputs_that_are_not_images(tmp_path):
    torch.save({"x": torch.randn(60, 2, 3) * 5 + 7, "y": torch.arange(60) % 3}, tmp_path / "threed.pt")
    dm = set_up(TensorDataModule(dataset=None, path=str(tmp_path / "threed.pt"), standardize=True))
    assert dm.mean.shape == dm.std.shape == (2, 3)
    batch = dm.on_after_batch_transfer(list(dm.train_set.tensors), 0)
    assert batch[0].mean(dim=0).abs().max() < 1e-5 and (batch[0].std(dim=0) - 1).abs().max() < 1e-4


# --- damaged and unusual image files -------------------------------------------------------------


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as image:
        assert image.mode.startswith("I;16")
        for channels in (1, 3):
            pixels = ImageTransforms(image_size=32, channels=channels).build(train=False)(image)
            assert pixels.mean().item() == pytest.approx(0.5, abs=0.01)  # clipped, it would be ~0.99
            assert pixels.min().item() == 0.0 and pixels.max().item() == 1.0


def test_a_symlink_loop_and_a_linked_file_count_each_image_once(tmp_path, recwarn):
    root = make_image_tree(tmp_path / "images", per_class=10)
    (root / "cat" / "loop").symlink_to("..", target_is_directory=True)  # cat/loop/cat/loop/... lists everything again
    (root / "dog" / "again.png").symlink_to(root / "dog" / "000.png")
    dm = set_up(ImageFolderDataModule(data_dir=str(root), loader=LoaderOptions(batch_size=4)))
    paths = [p for split in dm.split_samples.values() for p, _ in split]
    assert len(paths) == 20 and len({Path(p).resolve() for p in paths}) == 20  # none in two splits
    assert any("lead to files already listed" in str(w.message) for w in recwarn)


def test_a_truncated_jpeg_is_found_before_training_and_skipped_on_request(tmp_path):
    from PIL import Image

    root = make_image_tree(tmp_path / "images", per_class=6)
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(root / "cat" / "cut.jpg", quality=95)
    whole = (root / "cat" / "cut.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # cut off mid-image: verify() alone passes it
    with pytest.raises(UserError, match=r"unreadable image file\(s\): .*cut.jpg"):
        set_up(ImageFolderDataModule(data_dir=str(root), loader=LoaderOptions(batch_size=4)))
    dm = set_up(ImageFolderDataModule(data_dir=str(root), skip_bad_images=True, loader=LoaderOptions(batch_size=4)))
    assert not any(p.endswith("cut.jpg") for split in dm.split_samples.values() for p, _ in split)
    assert sum(len(split) for split in dm.split_samples.values()) == 12


def test_hidden_folders_are_no_class_and_no_input_and_files_of_other_types_are_named(tmp_path, recwarn):
    from PIL import Image

    root = make_image_tree(tmp_path / "images", per_class=6)
    make_image_tree(root / ".ipynb_checkpoints", per_class=2)  # what Jupyter leaves beside the data
    make_image_tree(root / "cat" / ".ipynb_checkpoints", per_class=2)
    frames = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(root / "dog" / "moving.gif", save_all=True, append_images=frames[1:])
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    dm = set_up(ImageFolderDataModule(data_dir=str(root), loader=LoaderOptions(batch_size=4)))
    assert dm.class_names == ["cat", "dog"]
    assert sum(len(split) for split in dm.split_samples.values()) == 12
    skipped = [str(w.message) for w in recwarn if "not read as images" in str(w.message)]
    assert len(skipped) == 1 and "left out 1 file(s) of a type not read as images (1 .gif), e.g. " in skipped[0], skipped
    predict = set_up(ImageFolderDataModule(data_dir="unused", predict_dir=str(root / "cat")), "predict")
    assert len(predict.predict_names) == 6


def test_a_class_folder_linked_to_another_and_a_class_left_empty_by_skip_bad_images_are_refused(tmp_path):
    root = make_image_tree(tmp_path / "images", per_class=6)
    (root / "kitten").symlink_to(root / "cat", target_is_directory=True)
    with pytest.raises(UserError, match="class folders cat and kitten are the same folder"):
        set_up(ImageFolderDataModule(data_dir=str(root)))
    (root / "kitten").unlink()
    (root / "bird").mkdir()
    (root / "bird" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError, match="class bird has no readable images left once data.skip_bad_images"):
        set_up(ImageFolderDataModule(data_dir=str(root), skip_bad_images=True))


@pytest.mark.parametrize("header", ["size,weight,animal\n", ""], ids=["with a header", "without"])
def test_class_labels_that_are_words_become_classes_in_sorted_order(tmp_path, header):
    rows = "".join(f"{i},{i % 3},{('dog', 'cat', 'bird')[i % 3]}\n" for i in range(30))
    (tmp_path / "animals.csv").write_text(header + rows)
    dm = set_up(TensorDataModule(dataset=None, path=str(tmp_path / "animals.csv"), val_fraction=0.2, test_fraction=0.2))
    assert dm.class_names == ["bird", "cat", "dog"] and sum(len(s) for s in (dm.train_set, dm.val_set, dm.test_set)) == 30
    inputs, targets = dm.train_set.tensors
    assert torch.equal(targets, torch.tensor([(2, 1, 0)[int(x[0]) % 3] for x in inputs]))  # dog -> 2, cat -> 1, bird -> 0
    with pytest.raises(UserError, match="regression targets must be numbers, found text labels such as 'bird'"):
        set_up(TensorDataModule(dataset=None, path=str(tmp_path / "animals.csv"), task="regression"))


def test_labels_from_1_name_the_empty_class_0_in_one_warning(tmp_path):
    targets = torch.arange(60) % 10 + 1  # 1..10: class 0 has no sample
    torch.save({"x": torch.randn(60, 4), "y": targets}, tmp_path / "from_one.pt")
    with pytest.warns(UserWarning, match=r"1 of the 11 classes 0\.\.10 have no sample \(0\)") as warned:
        dm = set_up(TensorDataModule(dataset=None, path=str(tmp_path / "from_one.pt")))
    assert len([w for w in warned if "have no sample" in str(w.message)]) == 1
    assert dm.class_names == [str(i) for i in range(11)]


class _Trainer:
    """What a data module reads of its trainer: the process layout and whether it is training."""

    training = True

    def __init__(self, world_size: int = 1, global_rank: int = 0, accumulate_grad_batches: int = 1) -> None:
        self.world_size, self.global_rank, self.accumulate_grad_batches = world_size, global_rank, accumulate_grad_batches


def _augmented(data: TensorDataModule, world_size: int, rank: int, epoch: int) -> list[torch.Tensor]:
    data.trainer = _Trainer(world_size, rank)  # type: ignore[assignment]
    return [data.on_after_batch_transfer(batch, 0)[0] for batch in _batches_of(data.train_dataloader(), epoch)]


def test_each_digit_is_moved_alike_by_one_process_and_by_the_rank_that_loads_it():
    """The batch affine draws from each sample's seed: two ranks' halves of a global batch are
    moved exactly as one process moves that batch, and another epoch moves them otherwise."""
    data = TensorDataModule(dataset="digits", input_shape=[1, 8, 8], resize_to=32, augment=BatchAffine(),
                            loader=LoaderOptions(global_batch_size=64))
    data.setup("fit")
    one = _augmented(data, 1, 0, epoch=3)
    ranks = [_augmented(data, 2, rank, epoch=3) for rank in (0, 1)]
    for i, batch in enumerate(one):
        assert torch.equal(batch[0::2], ranks[0][i][: len(batch[0::2])]) and torch.equal(batch[1::2], ranks[1][i][: len(batch[1::2])])
    data.trainer.training = False  # type: ignore[union-attr]
    plain = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)[0]
    assert not torch.equal(plain, one[0])  # the first batch of epoch 3 was moved
    assert not torch.equal(_augmented(data, 1, 0, epoch=4)[0], one[0])


def test_random_crops_of_an_image_folder_follow_the_sample_not_the_loader_workers(tmp_path):
    images = make_image_tree(tmp_path / "images", per_class=12)
    batches = {}
    for workers in (0, 2):
        data = ImageFolderDataModule(data_dir=str(images), transforms=ImageTransforms(image_size=16, random_crop_padding=4),
                                     loader=LoaderOptions(batch_size=4, num_workers=workers))
        data.trainer = _Trainer()  # type: ignore[assignment]
        data.setup("fit")
        batches[workers] = [_batches_of(data.train_dataloader(), epoch) for epoch in (0, 1)]
    for ours, theirs in zip(batches[0], batches[2], strict=True):  # per epoch
        for a, b in zip(ours, theirs, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(batches[0][0][0]) == 4  # inputs, targets, weights, seeds
