"""MixUp and CutMix of training images (torchvision's ``transforms.v2``), each image with its partner."""

import torch
from torch.nn import functional as F
from torchvision.transforms import v2


class SampleMixing:
    """Mixes each training image with its partner (``ProjectDataModule.pair_training_samples``) by
    MixUp (``mixup_alpha``) or CutMix (``cutmix_alpha``; with both, one of the two per step), and
    gives the soft targets: each class's share of the mixed image.

    torchvision mixes every image of a batch with the one before it. Here each image is put after
    its partner (``partner_0, image_0, partner_1, image_1, ...``) and every second output is kept, so
    each image is mixed with its own partner, also when that partner was another rank's sample.
    The mixing ratio (and CutMix's box) is drawn once per optimizer step from a generator seeded by
    the run's seed and the step, so every rank and accumulated batch of a step draws the same, a
    resumed run draws what the uninterrupted one did, and the run's other randomness is left as it was.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> None:
        self.num_classes = num_classes
        self.transforms = [transform for alpha, transform in ((mixup_alpha, v2.MixUp), (cutmix_alpha, v2.CutMix)) if alpha > 0
                           for transform in [transform(alpha=alpha)]]

    def __call__(self, images: torch.Tensor, partners: torch.Tensor, targets: torch.Tensor, partner_targets: torch.Tensor,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        interleaved = torch.stack([partners, images], dim=1).flatten(0, 1)
        labels = F.one_hot(torch.stack([partner_targets, targets], dim=1).flatten(), self.num_classes).to(images.dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transform = self.transforms[int(torch.randint(len(self.transforms), ()))]
            mixed, soft = transform(interleaved, labels)
        return mixed[1::2], soft[1::2]
