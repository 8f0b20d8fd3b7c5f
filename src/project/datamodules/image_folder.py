"""Image files in class folders: ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>``."""

import os
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import has_file_allowed_extension, make_dataset

from project.datamodules.splits import check_folds, check_predict_split, fold_split, refuse_fixed_validation, stratified_split
from project.datamodules.transforms import ImageTransforms
from project.engine.data import InferenceInputs, LoaderOptions, ProjectDataModule
from project.errors import UserError
from project.engine.provenance import hash_files
from project.inference.inputs import IMAGE_SUFFIXES, image_files, is_hidden

SPLIT_FOLDERS = ("train", "val", "test")


class ImageFiles(Dataset):
    """``(image tensor, class index)`` pairs from a list of ``(path, class index)``.

    A file that cannot be decoded raises ``UserError`` naming the file, not a bare PIL error.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: object) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        try:
            with Image.open(path) as image:
                image.load()
                return self.transform(image), target  # type: ignore[operator]
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"cannot read image {path}: {error}") from error


def unreadable_images(paths: list[str]) -> list[str]:
    """The paths PIL cannot open or verify. ``verify`` checks a file's structure without decoding
    pixels, which misses a JPEG cut off mid-image; a JPEG without its end marker is decoded in full."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image_format = image.format
                image.verify()
            if image_format == "JPEG" and not ends_like_a_jpeg(path):
                with Image.open(path) as image:
                    image.load()  # raises "image file is truncated"
        except Exception:  # PIL raises many types for damaged files
            bad.append(path)
    return bad


def ends_like_a_jpeg(path: str) -> bool:
    """Whether the end-of-image marker is in the file's last kilobyte (some writers append a little)."""
    with open(path, "rb") as file:
        file.seek(max(0, Path(path).stat().st_size - 1024))
        return b"\xff\xd9" in file.read()


def counted_once(samples: list[tuple[str, int]], root: Path) -> list[tuple[str, int]]:
    """``samples`` with every file once: torchvision follows symbolic links, so a link to a parent
    folder (a loop) lists the same files again at every depth, and a linked file or folder lists
    them twice, which can also put one image in two splits. Warns with the count."""
    seen: set[str] = set()
    unique = []
    for path, target in samples:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append((path, target))
    if len(unique) < len(samples):
        rank_zero_warn(f"{root}: {len(samples) - len(unique)} image path(s) lead to files already listed (symbolic "
                       f"links or a link loop); each of the {len(unique)} files is used once")
    return unique


def class_folders(root: Path) -> list[str]:
    """The class names under ``root``: its folders, sorted, without hidden ones. A folder that is a
    link to another class folder would hold the same images under a second label: refused."""
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    first_name: dict[str, str] = {}
    for name in names:
        real = os.path.realpath(root / name)
        if real in first_name:
            raise UserError(f"{root}: class folders {first_name[real]} and {name} are the same folder (a symbolic link): "
                            "each image would have two classes; remove one of them")
        first_name[real] = name
    return names


def warn_of_skipped_files(root: Path, skipped: list[Path]) -> None:
    """Name the files in the class folders that are not read for their type, counted by suffix:
    torchvision's ImageFolder passes over them without a word (a GIF, animated or not, is one)."""
    if skipped:
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in sorted(Counter(p.suffix.lower() or "(none)" for p in skipped).items()))
        rank_zero_warn(f"{root}: left out {len(skipped)} file(s) of a type not read as images ({kinds}), e.g. {skipped[0]}; "
                       f"convert them to one of {' '.join(IMAGE_SUFFIXES)} to use them")


def scan_class_folders(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples and class names of a class-per-folder tree, with clear errors for empty or missing trees."""
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    class_names = class_folders(root)
    if not class_names:
        raise UserError(f"{root}: no class folder in it (expected {root}/<class name>/<image files>)")
    skipped: dict[str, Path] = {}  # by real path: a link loop lists a file again at every depth

    def is_image(path: str) -> bool:  # sees every file of the one walk torchvision makes
        if is_hidden(Path(path), root):
            return False
        if has_file_allowed_extension(path, IMAGE_SUFFIXES):
            return True
        skipped.setdefault(os.path.realpath(path), Path(path))
        return False

    try:
        samples = make_dataset(str(root), {name: i for i, name in enumerate(class_names)}, is_valid_file=is_image)
    except FileNotFoundError as error:
        raise UserError(f"{root}: {error}(expected {root}/<class name>/<image files>: {', '.join(IMAGE_SUFFIXES)})") from error
    warn_of_skipped_files(root, list(skipped.values()))
    return counted_once(samples, root), class_names


class ImageFolderDataModule(ProjectDataModule):
    """Class-per-folder images, as in torchvision's ``ImageFolder``.

    Two layouts are accepted under ``data_dir``:

    - ``train/``, and optionally ``val/`` and ``test/``, each holding ``<class>/<images>``;
      a missing ``val/`` or ``test/`` is cut from ``train/`` by the fractions below;
    - one ``<class>/<images>`` tree, split into train/val/test by ``val_fraction`` and
      ``test_fraction`` within each class, with ``split_seed``.

    Args:
        data_dir: the root folder (not read by ``predict`` with a ``predict_dir``: the class names
            come from the checkpoint).
        predict_dir: a folder of images (any depth) to label with ``predict``; without it,
            ``predict`` labels a split of the data.
        predict_split: the split ``predict`` labels without ``predict_dir``: ``test``, or ``val``
            (with ``folds``: the out-of-fold predictions of this fold); ``predictions.csv`` then
            shows each image's class beside its prediction.
        transforms: resize, channels, augmentation and normalisation (``ImageTransforms``).
        check_images: verify every image file at setup, so a damaged file is reported before
            training starts rather than mid-epoch.
        skip_bad_images: with ``check_images``, leave damaged files out (with a warning) instead
            of stopping.
        folds / fold / fold_seed: k-fold cross-validation: the images outside the test split are
            cut into ``folds`` folds, stratified by class; fold ``fold`` (0..folds-1) validates and
            the others train. The folds depend on ``fold_seed`` only. Needs ``val_fraction: 0`` and
            no ``val/`` folder.
        fold_group_level: keep the images of one group in one fold, a group being the folder
            this many levels below the class folder (1: ``<class>/<group>/<images>``, say one
            patient or one camera).
        loader: batch size, workers and sampling (``LoaderOptions``).
    """

    new_inputs_option = "--data.predict_dir DIR (a folder of images)"

    def __init__(
        self,
        data_dir: str,
        predict_dir: str | None = None,
        predict_split: str = "test",
        transforms: ImageTransforms | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        check_images: bool = True,
        skip_bad_images: bool = False,
        folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 0,
        fold_group_level: int | None = None,
        loader: LoaderOptions | None = None,
    ) -> None:
        super().__init__(loader, predict_split)
        check_predict_split(predict_split, "data.predict_dir", predict_dir)
        check_folds(folds, fold, val_fraction)
        if fold_group_level is not None and (folds is None or fold_group_level < 1):
            raise UserError(f"data.fold_group_level {fold_group_level} needs data.folds and a level of 1 or more "
                            "(1: <class>/<group>/<images>)")
        self.folds, self.fold, self.fold_seed, self.fold_group_level = folds, fold, fold_seed, fold_group_level
        self.data_dir = Path(data_dir)
        self.predict_dir = Path(predict_dir) if predict_dir else None
        self.transforms = transforms or ImageTransforms()
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.check_images, self.skip_bad_images = check_images, skip_bad_images
        self.split_samples: dict[str, list[tuple[str, int]]] = {}

    def prepare_split_samples(self) -> dict[str, list[tuple[str, int]]]:
        """``{"train": [...], "val": [...], "test": [...]}`` of ``(path, class index)``; sets ``class_names``."""
        root = self.data_dir
        if (root / "train").is_dir():
            samples = {}
            train, class_names = scan_class_folders(root / "train")
            if self.folds is not None and (root / "val").is_dir():
                refuse_fixed_validation(self.fold, f"{root / 'val'}/")
            for split in ("val", "test"):
                if (root / split).is_dir():
                    samples[split], names = scan_class_folders(root / split)
                    if names != class_names:
                        raise UserError(f"{root / split} has classes {names} but {root / 'train'} has {class_names}")
            cut_val = 0.0 if "val" in samples else self.val_fraction
            cut_test = 0.0 if "test" in samples else self.test_fraction
            keep, val_idx, test_idx = stratified_split([t for _, t in train], cut_val, cut_test, self.split_seed)
            samples["train"] = [train[i] for i in keep]
            samples.setdefault("val", [train[i] for i in val_idx])
            samples.setdefault("test", [train[i] for i in test_idx])
        else:
            every, class_names = scan_class_folders(root)
            train_idx, val_idx, test_idx = stratified_split(
                [t for _, t in every], self.val_fraction, self.test_fraction, self.split_seed
            )
            samples = {name: [every[i] for i in idx] for name, idx in zip(SPLIT_FOLDERS, (train_idx, val_idx, test_idx))}
        self.class_names = class_names
        if self.check_images:
            samples = self._without_bad_images(samples)
        if self.folds is not None:
            samples["train"], samples["val"] = self._fold(samples["train"] + samples["val"])
        return samples

    def _fold(self, every: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """``(train, validation)`` samples of fold ``fold`` of the images outside the test split."""
        names = self.class_names or []
        groups = None
        if self.fold_group_level is not None:
            groups, tree = [], self.data_dir / "train" if (self.data_dir / "train").is_dir() else self.data_dir
            for path, _ in every:
                below_class = Path(os.path.relpath(path, tree)).parts[1:]
                if len(below_class) <= self.fold_group_level:
                    raise UserError(f"{path}: data.fold_group_level {self.fold_group_level} needs each image "
                                    f"{self.fold_group_level} folder(s) below its class folder (<class>/<group>/<image>)")
                groups.append(below_class[: self.fold_group_level])
        train, validation = fold_split(range(len(every)), [names[t] for _, t in every], groups, self.folds,  # type: ignore[arg-type]
                                       self.fold, self.fold_seed)
        self.hold_out_fold(self.folds, self.fold, self.fold_seed,  # type: ignore[arg-type]
                           [os.path.relpath(every[i][0], self.data_dir) for i in validation])
        return [every[i] for i in train], [every[i] for i in validation]

    def _without_bad_images(self, samples: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
        bad = set(unreadable_images([path for split in samples.values() for path, _ in split]))
        if not bad:
            return samples
        listed = ", ".join(sorted(bad)[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        if not self.skip_bad_images:
            raise UserError(f"unreadable image file(s): {listed} (remove them or set data.skip_bad_images: true)")
        rank_zero_warn(f"skipping {len(bad)} unreadable image file(s): {listed}")
        kept = {name: [s for s in split if s[0] not in bad] for name, split in samples.items()}
        left = {target for split in kept.values() for _, target in split}
        emptied = [name for i, name in enumerate(self.class_names) if i not in left]  # type: ignore[arg-type]
        if emptied:
            raise UserError(f"class {', '.join(emptied)} has no readable images left once data.skip_bad_images "
                            "leaves out the unreadable ones: the net would keep an output it never learns; "
                            "fix or add images, or remove the folder")
        return kept

    def setup(self, stage: str) -> None:
        eval_transform = self.transforms.build(train=False)
        if stage == "predict" and self.predict_dir is not None:
            files = image_files(self.predict_dir)
            if self.check_images and (bad := unreadable_images(files)):
                raise UserError(f"unreadable image file(s) in {self.predict_dir}: {', '.join(bad[:5])}")
            self.predict_names = files
            self.predict_set = ImageFiles([(f, -1) for f in files], eval_transform)  # -1: no class known
            return
        if not self.split_samples:
            self.split_samples = self.prepare_split_samples()
        self.train_set = ImageFiles(self.split_samples["train"], self.transforms.build(train=True))
        self.val_set = ImageFiles(self.split_samples["val"], eval_transform)
        self.test_set = ImageFiles(self.split_samples["test"], eval_transform)
        if stage == "predict":
            self.predict_names = [path for path, _ in self.split_samples[self.predict_split]]
            self.predict_set = self.labelled_split_to_predict()

    def inference_inputs(self) -> InferenceInputs:
        unnormalized = self.transforms.build(train=False, normalize=False)
        return self.transforms.inference_inputs(ImageFiles(self.split_samples["test"], unnormalized), str(self.predict_dir or self.data_dir),
                                                train_inputs=ImageFiles(self.split_samples["train"], unnormalized))

    def train_targets(self) -> torch.Tensor:
        return torch.tensor([target for _, target in self.split_samples["train"]])

    def random_training_inputs(self) -> str | None:
        return self.transforms.randomness()

    def fingerprint(self, stage: str) -> dict:
        """For the run record: a hash of the image files read (split, class, path and size)."""
        if stage == "predict" and self.predict_dir is not None:
            return hash_files((("predict", path) for path in self.predict_names), self.predict_dir)
        entries = ((f"{split}\t{self.class_names[label]}", path)  # type: ignore[index]
                   for split, samples in self.split_samples.items() for path, label in samples)
        return {**hash_files(entries, self.data_dir), "samples": {split: len(s) for split, s in self.split_samples.items()},
                **self.fold_fingerprint()}
