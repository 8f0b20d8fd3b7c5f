"""Lightning's Trainer with one more subcommand for the command line: ``export``."""

from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from project.engine.data import ProjectDataModule
from project.engine.errors import UserError
from project.engine.module import TrainingModule


class ProjectTrainer(Trainer):
    """Lightning's Trainer options (trainer.*).

    ``ProjectTrainer`` adds ``export``, which LightningCLI offers as ``train.py export`` beside
    ``fit``, ``validate``, ``test`` and ``predict`` (a subcommand is a Trainer method of that name)."""

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
        check_samples: int = 1000,
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
            weights_only: as in the config a ``fit`` run saved; checkpoints are always read with
                ``weights_only=True``.
        """
        from project.engine.export import export_checkpoint  # onnx and its exporter load only for export

        if not isinstance(model, TrainingModule) or not isinstance(datamodule, ProjectDataModule):
            raise UserError("export takes a project.engine.module.TrainingModule and a project.engine.data.ProjectDataModule")
        export_checkpoint(model, datamodule, ckpt_path, output, check_samples)
