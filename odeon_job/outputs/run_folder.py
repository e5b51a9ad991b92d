"""The run folder, ``output_folder/name_exp_log/version_name``: every file name under a run, and the rules
for starting and resuming there.

A run folder holds ``config.json`` (``config_resumed_*.json`` for each resume), ``history_val.json`` and
``history_test.json``, the checkpoint folders ``odeon_val_loss_ckpt`` (with ``last.ckpt``, where a run
resumes from) and ``odeon_val_miou_ckpt``, ``tensorboard/``, ``predictions/``, ``errors/`` and ``scenes.csv``
(the test report), ``figures/`` (PNG pictures), and, for MLflow, ``mlflow_run.json`` (the run's record) and, when
the output folder is remote, the run's own store ``mlflow.db`` and ``mlflow-artifacts/``. Nothing else names them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass

from odeon_job import storage
from odeon_job.config import JobConfig
from odeon_job.errors import ConfigError
from odeon_job.process.launch import hand_over_run_names, is_first_process
from odeon_job.redaction import redact_values
from odeon_job.storage.model_files import DamagedModelFile, load_plain

log = logging.getLogger("odeon")

VAL_LOSS_CKPT_FOLDER = "odeon_val_loss_ckpt"
VAL_MIOU_CKPT_FOLDER = "odeon_val_miou_ckpt"
LAST_CHECKPOINT = "last.ckpt"
#: ``export_checkpoint`` format → the suffix of its file beside each checkpoint.
EXPORT_SUFFIXES = {".pth": ".pth", "odeon_pth": ".odeon.pth"}
#: The run's own MLflow store (a local output folder keeps one store for all its runs, under the same name).
STORE_FILE = "mlflow.db"


def model_file_extension(config: JobConfig) -> str:
    """``model_out_ext``, else ``model_filename``'s extension when it is .pth or .ckpt, else .ckpt."""
    out = config.output_setup
    extension = os.path.splitext(out.model_filename or "")[1]
    return out.model_out_ext or (extension if extension in (".pth", ".ckpt") else ".ckpt")


def model_basename(config: JobConfig) -> str:
    """The base name of saved models: ``model_filename`` without folder and extension, else the model's name."""
    name = config.output_setup.model_filename
    return os.path.splitext(os.path.basename(name))[0] if name else config.train_setup.model_name


def prediction_names(images: list[str]) -> list[str]:
    """Output file names: the input's, or ``<row>_<name>`` for all when two inputs share a name."""
    names = [storage.basename(image) for image in images]
    if max(Counter(names).values(), default=0) > 1:
        return [f"{row:06d}_{name}" for row, name in enumerate(names, 1)]
    return names


def export_path(checkpoint: str, export: str = ".pth") -> str:
    """The export ``export`` (a key of :data:`EXPORT_SUFFIXES`) beside the checkpoint file ``checkpoint``."""
    return os.path.splitext(checkpoint)[0] + EXPORT_SUFFIXES[export]


def previous_path(last: str) -> str:
    """Where the checkpoint before ``last`` is kept (``last.ckpt`` → ``last-previous.ckpt``)."""
    stem, extension = os.path.splitext(last)
    return f"{stem}-previous{extension}"


@dataclass(frozen=True)
class RunStart:
    """How a training starts in its run folder: from a checkpoint, or afresh (``empty_first``: the folder
    holds a previous attempt's files, with nothing usable to resume, and is emptied once the checks pass)."""

    resume_from: str | None = None
    empty_first: bool = False
    reason: str = ""


@dataclass(frozen=True)
class RunFolder:
    url: str

    @classmethod
    def of(cls, config: JobConfig) -> RunFolder:
        """The run folder of a configuration whose names are resolved (``launch.with_run_names``)."""
        out = config.output_setup
        assert out.name_exp_log and out.version_name, "resolve the run names first"
        return cls(storage.join(out.output_folder, out.name_exp_log, out.version_name))

    def path(self, *parts: str) -> str:
        return storage.join(self.url, *parts)

    # --- file names ----------------------------------------------------------------------------------------

    @property
    def config_file(self) -> str:
        return self.path("config.json")

    def resumed_config_file(self, now: dt.datetime) -> str:
        return self.path(f"config_resumed_{now:%Y%m%d-%H%M%S}.json")

    @property
    def history_val(self) -> str:
        return self.path("history_val.json")

    @property
    def history_test(self) -> str:
        return self.path("history_test.json")

    @property
    def model_card(self) -> str:
        return self.path("model_card.md")

    @property
    def val_loss_checkpoints(self) -> str:
        return self.path(VAL_LOSS_CKPT_FOLDER)

    @property
    def val_miou_checkpoints(self) -> str:
        return self.path(VAL_MIOU_CKPT_FOLDER)

    @property
    def last_checkpoint(self) -> str:
        """The checkpoint rewritten at every validation: where a run resumes from."""
        return self.path(VAL_LOSS_CKPT_FOLDER, LAST_CHECKPOINT)

    @property
    def tensorboard(self) -> str:
        return self.path("tensorboard")

    @property
    def predictions(self) -> str:
        return self.path("predictions")

    @property
    def figures(self) -> str:
        return self.path("figures")

    @property
    def errors(self) -> str:
        """The test's error maps, one per row (beside ``predictions/``)."""
        return self.path("errors")

    @property
    def scenes_table(self) -> str:
        """The test's figures row by row."""
        return self.path("scenes.csv")

    @property
    def mlflow_record(self) -> str:
        """The run's MLflow tracking URI and run id, read by ``continue_training``."""
        return self.path("mlflow_run.json")

    @property
    def mlflow_store(self) -> str:
        """The run's own MLflow store, when its output folder is remote."""
        return self.path(STORE_FILE)

    @property
    def mlflow_artifacts(self) -> str:
        return self.path("mlflow-artifacts")

    def pth_file(self, name: str, kind: str | None = None) -> str:
        """``.pth`` mode's files: ``{name}.pth`` (the network), ``optimizer_{name}.pth``, ``train_{name}.pth``."""
        return self.path(f"{kind}_{name}.pth" if kind else f"{name}.pth")

    def best_checkpoint(self) -> str | None:
        """The best val_loss checkpoint kept here (the lowest ``val_loss`` of its name, the earliest epoch of equal
        ones, as Lightning keeps them), None when there is none."""
        ranked = []
        for url in storage.glob(self.path(VAL_LOSS_CKPT_FOLDER, "*.ckpt")):
            found = re.search(r"-epoch=(\d+)-val_loss=([0-9.]+|nan)\.ckpt$", url)
            if found and found.group(2) != "nan":
                ranked.append((float(found.group(2)), int(found.group(1)), url))
        return min(ranked)[2] if ranked else None

    def config_files(self) -> list[str]:
        """``config.json`` and every ``config_resumed_*.json``."""
        return storage.glob(self.path("config*.json"))

    # --- starting and resuming -----------------------------------------------------------------------------

    def holds_checkpoint(self) -> bool:
        """Whether any model file is here: a checkpoint in the checkpoint folders, or a .pth."""
        patterns = (
            self.path(VAL_LOSS_CKPT_FOLDER, "*.ckpt"),
            self.path(VAL_MIOU_CKPT_FOLDER, "*.ckpt"),
            self.path("*.pth"),
        )
        return any(storage.glob(pattern) for pattern in patterns)

    def usable_last_checkpoint(self) -> str | None:
        """``last.ckpt``, or ``last-previous.ckpt`` when ``last.ckpt`` is damaged (one warning); None when
        neither loads. A checkpoint that would run code is refused (:class:`UnsafeModelFile`), never skipped."""
        last = self.last_checkpoint
        for candidate in (last, previous_path(last)):
            if not storage.exists(candidate):
                continue
            try:
                load_plain(candidate)
            except DamagedModelFile as error:
                log.warning("resume: %s", error)
                continue
            if candidate != last:
                log.warning("resume: from %s, the checkpoint of the validation before", candidate)
            return candidate
        return None

    def links_out(self) -> list[str]:
        """Links in the local run folder (or the run folder itself, as a link) that lead out of it: a write through
        one would land outside the run folder (a ``predictions`` link planted to /etc, say)."""
        if not storage.is_local(self.url):
            return []
        root = os.path.abspath(storage.resolve(self.url, ""))
        if os.path.islink(root):
            return [root]
        if not os.path.isdir(root):
            return []
        inside = os.path.realpath(root)
        found = []
        for folder, subfolders, files in os.walk(root):  # never into a linked folder (followlinks is False)
            for name in [*subfolders, *files]:
                path = os.path.join(folder, name)
                target = os.path.realpath(path)
                if os.path.islink(path) and os.path.commonpath([inside, target]) != inside:
                    found.append(path)
        return found

    def decide_start(self, config: JobConfig) -> RunStart:
        """Where the run starts (``continue_training``), after checking the folder.

        A folder our run started (its config.json) that holds no checkpoint yet is reused, whatever
        ``continue_training`` says: fixing a CSV and running the same command again must work, and so must a
        pod restarted after a kill before the first validation. With "auto", a folder of ours whose
        checkpoints are all damaged starts afresh too (a restarted pod must never crash-loop)."""
        links = self.links_out()
        if links:
            raise ConfigError(
                f"output_setup: the run folder {self.url} holds a link that leads out of it ({links[0]} "
                f"-> {os.path.realpath(links[0])}): nothing is written through links; remove it"
            )
        resume = config.train_setup.continue_training
        last = self.last_checkpoint
        if resume:
            usable = self.usable_last_checkpoint()
            if usable:
                return RunStart(resume_from=usable)
        if not is_first_process():
            return RunStart()  # the first process has checked (and perhaps emptied) the folder
        if storage.is_nonempty_folder(self.url):
            ours = storage.exists(self.config_file)
            if ours and not self.holds_checkpoint():
                return RunStart(empty_first=True, reason="a previous attempt stopped before its first checkpoint")
            if ours and resume == "auto":
                return RunStart(empty_first=True, reason=f"no checkpoint to resume from loads ({last})")
            if resume == "auto":
                raise ConfigError(
                    f'train_setup.continue_training: "auto" found no checkpoint to resume from '
                    f"({last}) in the run folder {self.url}, which is not empty and not a run of this "
                    "job; remove it or choose another version_name"
                )
            if not resume:
                raise ConfigError(
                    f"output_setup.version_name: the run folder {self.url} already exists and is not "
                    "empty; choose another version_name, or set train_setup.continue_training to "
                    "resume it"
                )
        if resume is True:
            raise ConfigError(
                f"train_setup.continue_training: nothing to resume: {last} does not exist or does not "
                "load (set output_setup.name_exp_log and version_name to those of the run to continue)"
            )
        return RunStart()

    def start(self, config: JobConfig, start: RunStart) -> None:
        """Create (or empty) the folder and save the configuration (first process only)."""
        resume_from = start.resume_from
        if resume_from:  # the checkpoint folders of the run being resumed are expected to hold files
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        if not is_first_process():
            return
        hand_over_run_names(config)  # for the DDP processes
        if start.empty_first:
            storage.remove_tree(self.url)
            log.warning(
                "run folder %s: %s; its files are removed and the run starts afresh there", self.url, start.reason
            )
        storage.makedirs(self.url)
        config_file = self.resumed_config_file(dt.datetime.now()) if resume_from else self.config_file
        text = json.dumps(redact_values(config.model_dump(mode="json")), indent=2)  # URLs without credentials
        storage.write_text(config_file, text + "\n")
        log.info("run folder: %s%s", self.url, f" (resuming from {resume_from})" if resume_from else "")
