"""Lightning's Trainer with more subcommands for the command line: ``export``, ``lr_find``, ``scale_batch_size``."""

from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from project.engine.data import ProjectDataModule
from project.errors import UserError


TRAINING_MODULE_METHODS = ("size_net_for", "export_outputs")  # what export and the tuners call beyond Lightning's


class ProjectTrainer(Trainer):
    """Lightning's Trainer options (trainer.*).

    ``ProjectTrainer`` adds ``export``, ``lr_find`` and ``scale_batch_size``, which LightningCLI
    offers as ``train.py export`` (and so on) beside ``fit``, ``validate``, ``test`` and ``predict``
    (a subcommand is a Trainer method of that name)."""

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
        check_samples: int = 1000,
        quantize: str | None = None,
        ensemble: list[str] | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Export a checkpoint as ONNX (preprocessing inside, any batch size), safetensors weights and a JSON.

        Args:
            model: the training module, rebuilt from the checkpoint's hyperparameters.
            datamodule: the run's data module: its test split checks the export.
            ckpt_path: the checkpoint to export.
            output: the folder to write ``<checkpoint name>.onnx``, ``.safetensors`` and ``.json``
                to (default: beside the checkpoint).
            check_samples: how many test samples the export is checked on; it refuses to finish
                when an output differs by more than 1e-4 or a predicted class differs.
            quantize: ``int8``: also write ``<name>.int8.onnx`` (and its ``.json``), statically
                quantized with activation ranges calibrated on training samples; refused when its
                test-split accuracy is more than 0.5 points below the float graph's.
            ensemble: more checkpoints of the same model (say the other folds' best, ``seeds.py
                --folds``): one graph, ``ensemble.onnx`` (and ``.safetensors``, ``.json``), whose
                probabilities are the mean of all of theirs and ckpt_path's, each member behind its
                own preprocessing; checked against the members averaged, scored on the test split.
            weights_only: as in the config a ``fit`` run saved; checkpoints are always read with
                ``weights_only=True``.
        """
        from project.tools.export import export_checkpoint  # onnx and its exporter load only for export

        export_checkpoint(*self._project_classes(model, datamodule), ckpt_path, output, check_samples, quantize,
                          read=self.strategy.checkpoint_io.load_checkpoint, ensemble=ensemble)

    def lr_find(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_training: int = 100,
        early_stop_threshold: float | None = 4.0,
    ) -> float:
        """Find a learning rate: Lightning's range test, its plot (``lr_find.png``) and numbers
        (``lr_find.csv``) in the run folder, and the fit command with the suggested lr.

        Args:
            model: the training module of the config.
            datamodule: its data module.
            min_lr: the lr of the first step.
            max_lr: the lr of the last step.
            num_training: optimizer steps, the lr rising exponentially between the two.
            early_stop_threshold: stop once the loss exceeds this multiple of the best so far (null: never).
        """
        from project.tools.tuning import find_lr

        return find_lr(self, *self._project_classes(model, datamodule), min_lr, max_lr, num_training, early_stop_threshold)

    def scale_batch_size(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
    ) -> int:
        """Find the largest batch per device that trains without running out of memory (Lightning's
        batch-size finder), and print the fit command with it.

        Args:
            model: the training module of the config.
            datamodule: its data module.
            mode: ``power`` (double until memory runs out) or ``binsearch`` (then narrow it down).
            steps_per_trial: optimizer steps tried at each batch size.
            init_val: the first batch size tried.
            max_trials: the most batch sizes tried.
        """
        from project.tools.tuning import find_batch_size

        return find_batch_size(self, *self._project_classes(model, datamodule), mode, steps_per_trial, init_val, max_trials)

    @staticmethod
    def _project_classes(model: LightningModule, datamodule: LightningDataModule | None) -> tuple[LightningModule, ProjectDataModule]:
        if not all(callable(getattr(model, name, None)) for name in TRAINING_MODULE_METHODS) or not isinstance(datamodule, ProjectDataModule):
            raise UserError("this subcommand takes a training module derived from project.lightning_modules.base.TrainingModule "
                            "and a data module derived from project.engine.data.ProjectDataModule")
        return model, datamodule
