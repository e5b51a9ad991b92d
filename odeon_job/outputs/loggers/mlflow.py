"""MLflow as a Lightning logger: the run's parameters, per-validation metrics, tags, system metrics,
pictures, artifacts and best model.

Lightning drives it: ``log_hyperparams`` at the start of the training opens the run (or, when resuming,
reopens it), ``log_metrics`` sends what the module logs, ``after_save_checkpoint`` learns the best
checkpoints, and ``finalize`` closes it: after the test when one follows the training, else after the
training (FINISHED with artifacts and model; FAILED, or KILLED after SIGTERM, as soon as a step fails).

Only the first process talks to MLflow. Losing the tracking server never costs the training: every
call goes through :meth:`MlflowOutput._call`, which on the first failure warns once, stops calling for
:data:`RETRY_AFTER` seconds (a dead server would otherwise cost MLflow's retries at every call),
keeps the metrics that could not be sent to send them when the server answers again, and lists at the
end what was not logged. ``output_setup.mlflow_required`` turns any failure into an error instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pytorch_lightning.loggers import Logger

from odeon_job import storage
from odeon_job.config import MONITOR_MODES, JobConfig
from odeon_job.errors import StorageError
from odeon_job.outputs.loggers import figure_file, output_metrics
from odeon_job.outputs.loggers.sqlite_store import ensure_store, sqlite_path
from odeon_job.outputs.mlflow_model import log_model
from odeon_job.outputs.run_folder import RunFolder
from odeon_job.outputs.tracking import (
    Store,
    csv_inputs,
    environment_tags,
    failure_reason,
    flatten,
    given_tracking_uri,
    metric_name,
    run_name,
    store_for,
)
from odeon_job.redaction import redact, redact_log_handlers
from odeon_job.training.plots import png_bytes

if TYPE_CHECKING:
    from mlflow.entities import Metric

    from odeon_job.training.segmentation_module import SegmentationModule

log = logging.getLogger("odeon")
T = TypeVar("T")

#: Seconds without calls after a failure.
RETRY_AFTER = 60.0
#: MLflow's HTTP retries unless the environment sets them: its defaults (7 retries, backoff factor 2,
#: 120 s timeout) would stall a training for minutes at every call while the server is down.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
#: MLflow prints "View run ... at <tracking URI>" to stdout (not through logging), user:password included:
#: off unless the environment says otherwise; our own line names the run with the URI redacted.
QUIET_URLS = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
SYSTEM_METRICS_INTERVAL = 10.0
#: Metric values kept for a later attempt while the server is away (the oldest are dropped beyond).
PENDING_LIMIT = 200_000
#: MLflow's limit of metrics per log_batch call.
BATCH = 1000


#: The artifact file of each picture (``figures/<name>_<split>.png``, the curves without a split).
class MlflowOutput(Logger):
    """``test_follows``: a test runs after the training (the run closes after it); ``killed``: whether a
    failure is a SIGTERM stop (KILLED rather than FAILED); ``pth_model``: the best model in ``.pth`` mode
    (otherwise the best val_loss checkpoint)."""

    def __init__(
        self,
        config: JobConfig,
        run_folder: RunFolder,
        resuming: bool,
        test_follows: bool,
        killed: Callable[[], bool] = lambda: False,
        pth_model: str | None = None,
    ) -> None:
        super().__init__()
        out = config.output_setup
        self.config, self.run_folder, self.resuming = config, run_folder, resuming
        self.test_follows, self.killed = test_follows, killed
        self.store = Store(given_tracking_uri(config) or "(local store)")
        self.experiment_name = out.mlflow_experiment or out.name_exp_log or "Default"
        self.run_name = run_name(config)
        self.required = out.mlflow_required
        self.registered_model_name = out.registered_model_name
        self.run_id: str | None = None
        self.not_logged: list[str] = []
        self.pending: list[Metric] = []
        self.unsent_metrics = 0
        self.down_until = 0.0
        self.warned = False
        self.monitor: Any = None
        self.started = self.closed = False
        self.module: SegmentationModule | None = None
        self.best_models: dict[str, str] = {"val_loss": pth_model} if pth_model else {}
        self.figures: dict[str, bytes] = {}

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    def _run(self) -> str:
        """The open run's id: every call that needs it comes after the run was opened."""
        assert self.run_id is not None, "no MLflow run is open"
        return self.run_id

    @property
    def experiment(self) -> MlflowOutput:
        return self

    # --- calls that may fail -----------------------------------------------------------------------------

    def _call(self, what: str, action: Callable[[], T], record: bool = True) -> T | None:
        """``action()``, or None when MLflow is away (``what`` is then listed at the end)."""
        if time.monotonic() < self.down_until:
            if record:
                self.not_logged.append(what)
            return None
        try:
            return action()
        except Exception as error:  # MlflowException, requests' and the artifact stores' errors alike
            reason = failure_reason(error)
            if self.required:
                raise StorageError(
                    f"MLflow at {self.store.tracking_uri}: cannot {what}: {reason} "
                    "(output_setup.mlflow_required is true)"
                ) from error
            self.down_until = time.monotonic() + RETRY_AFTER
            if record:
                self.not_logged.append(what)
            if not self.warned:
                self.warned = True
                log.warning(
                    "mlflow: cannot %s at %s (%s); the training goes on, and its end lists what was not logged",
                    what,
                    self.store.tracking_uri,
                    reason,
                )
            return None

    # --- the run -----------------------------------------------------------------------------------------

    # --- what Lightning hands every logger ---------------------------------------------------------------

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """At the start of the training (and of the test): open the run once. Its parameters are the
        flattened configuration, not the module's hyperparameters (which hold it as one JSON string)."""
        if not self.started:
            self.started = True
            self.start()

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Lightning hands every logger the module here: kept to log the model at the end."""
        self.module = model

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = output_metrics(metrics)
        if values:
            self._log_metrics(values, step or 0)
        if any(name.startswith("val/") for name in values):
            self._sync_store()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        monitor = getattr(checkpoint_callback, "monitor", None)
        if monitor in MONITOR_MODES and checkpoint_callback.best_model_path:
            self.best_models[monitor] = checkpoint_callback.best_model_path

    def log_figure(self, split: str, name: str, image: np.ndarray, step: int) -> None:
        """Kept (the latest of each) and logged as artifacts when the run closes."""
        self.figures[figure_file(split, name)] = png_bytes(image)

    def finalize(self, status: str) -> None:
        """Lightning's end of a training or test: the run closes after the last of them, or at a failure."""
        if self.closed or not self.started:
            return
        fitting = self.module is not None and self.module.trainer.state.fn == "fit"
        if status == "success" and fitting and self.test_follows:
            self._call("send the metrics kept during the outage", self._flush_metrics, record=False)
            self._sync_store()
            return
        self.closed = True
        self.finish("FINISHED" if status == "success" else "KILLED" if self.killed() else "FAILED")

    # --- the run -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create (or, when resuming, reopen) the run and log the configuration. First process only."""
        for name, value in {**HTTP_DEFAULTS, **QUIET_URLS}.items():
            os.environ.setdefault(name, value)
        self.store = store_for(self.config, self.run_folder)
        from mlflow import MlflowClient

        _quiet_mlflow()  # after the import, which sets MLflow's own levels

        local_store = sqlite_path(self.store.tracking_uri)
        if local_store is not None:  # built whole before MLflow opens it (which builds it in place)
            root = self.store.artifact_location or os.path.dirname(local_store)
            if self._call("create the store", lambda: ensure_store(local_store, root)) is None:
                return
        self.client = MlflowClient(self.store.tracking_uri)
        self.run_id = self._call("start the run", self._open_run)
        if self.run_id is None:
            return
        storage.write_text(
            self.run_folder.mlflow_record,
            json.dumps({"tracking_uri": redact(self.store.tracking_uri), "run_id": self.run_id}, indent=1) + "\n",
        )
        self._call("log the parameters", self._log_params)
        if not self.resuming:
            self._call("log the dataset inputs (the CSVs)", self._log_inputs)
        self._start_system_metrics()
        self._sync_store()
        log.info(
            "mlflow: run %s (%s) in experiment %r at %s",
            self.run_name,
            self.run_id,
            self.experiment_name,
            self.store.tracking_uri,
        )

    def _previous_run_id(self) -> str | None:
        record = self.run_folder.mlflow_record
        if not storage.exists(record):
            return None
        previous = json.loads(storage.read_text(record))
        if previous.get("tracking_uri") != redact(self.store.tracking_uri):
            log.warning(
                "mlflow: the run being resumed was recorded at %s, not %s: starting a new MLflow run",
                previous.get("tracking_uri"),
                self.store.tracking_uri,
            )
            return None
        return previous.get("run_id")

    def _open_run(self) -> str:
        tags = {
            **environment_tags(),
            "odeon.run_folder": redact(self.run_folder.url),
            "odeon.model": self.config.train_setup.model_name,
        }
        run_id = self._previous_run_id() if self.resuming else None
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                self.client.set_tag(run_id, key, value)
            return run_id
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.experiment_name, self.store.artifact_location)
        )
        return self.client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id

    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = flatten(self.config.model_dump(mode="json"))
        if self.resuming:  # parameters cannot change: the new configuration is an artifact of its own
            logged = self.client.get_run(self._run).data.params
            params = {key: value for key, value in params.items() if key not in logged}
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow's limit of parameters per call
            self.client.log_batch(self._run, params=items[start : start + 100])

    def _log_inputs(self) -> None:
        """The CSVs as MLflow dataset inputs (the run page's Datasets column): name, digest, source, rows."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for csv in csv_inputs(self.config):
            dataset = Dataset(
                name=csv.name,
                digest=csv.digest,
                source_type="s3" if csv.url.startswith("s3://") else "http" if "://" in csv.url else "local",
                source=json.dumps({"uri": csv.url}),
                profile=json.dumps({"num_rows": csv.rows}),
            )
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", ",".join(csv.splits))]))
        self.client.log_inputs(self._run, datasets=inputs)

    def _start_system_metrics(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=SYSTEM_METRICS_INTERVAL,
                resume_logging=self.resuming,
                tracking_uri=self.store.tracking_uri,
            )
            self.monitor.start()
        except Exception as error:  # psutil missing or a platform it cannot read: not worth a warning per run
            log.debug("mlflow: no system metrics (%s)", error)
            self.monitor = None

    def _sync_store(self) -> None:
        """Upload a per-run store (remote output folder without a tracking server)."""
        if self.store.local_file and self.store.upload_url:
            storage.put_file(self.store.local_file, self.store.upload_url)

    # --- metrics -----------------------------------------------------------------------------------------

    def _log_metrics(self, values: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        stamp = int(time.time() * 1000)
        self.pending += [
            Metric(metric_name(key), float(value), stamp, step) for key, value in values.items() if value is not None
        ]
        if len(self.pending) > PENDING_LIMIT:
            self.unsent_metrics += len(self.pending) - PENDING_LIMIT
            self.pending = self.pending[-PENDING_LIMIT:]
        self._call("log metrics", self._flush_metrics, record=False)

    def _flush_metrics(self) -> None:
        while self.pending:
            self.client.log_batch(self._run, metrics=self.pending[:BATCH])
            del self.pending[:BATCH]

    # --- the end -----------------------------------------------------------------------------------------

    def finish(self, status: str) -> None:
        """Artifacts and model (when the training succeeded), the run's status, and what was not logged."""
        module, best_models = self.module, self.best_models
        if self.run_id is not None:
            if status == "FINISHED" and module is not None:
                self._log_artifacts(best_models)
                if best_models.get("val_loss"):
                    self._call(
                        "log and register the model",
                        lambda: log_model(
                            module,
                            best_models["val_loss"],
                            self.store.tracking_uri,
                            self._run,
                            self.registered_model_name,
                            self._model_card(),
                        ),
                    )
            if self.monitor is not None:
                self.monitor.finish()
            self._call("send the metrics kept during the outage", self._flush_metrics, record=False)
            self._call(f"mark the run {status}", lambda: self.client.set_terminated(self._run, status))
            self._sync_store()
        if self.store.local_file:  # a per-run store, uploaded: its staging folder goes with the run
            shutil.rmtree(os.path.dirname(self.store.local_file), ignore_errors=True)
        self._summary()

    def _model_card(self) -> str | None:
        card = self.run_folder.model_card
        return storage.read_text(card) if storage.exists(card) else None

    def _summary(self) -> None:
        unsent = len(self.pending) + self.unsent_metrics
        missing = ([f"{unsent} metric value(s)"] if unsent else []) + self.not_logged
        if missing:
            log.warning("mlflow: not logged to %s: %s", self.store.tracking_uri, "; ".join(missing))
        elif self.run_id is not None:
            log.info("mlflow: everything logged to run %s at %s", self.run_id, self.store.tracking_uri)

    def _log_artifacts(self, best_models: dict[str, str]) -> None:
        """Configs, history files, best checkpoints and pictures, gathered locally then logged in one call."""
        folder = storage.staging_folder("mlflow-artifacts")
        try:

            def put(relative: str, data: bytes) -> None:
                path = os.path.join(folder, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as stream:
                    stream.write(data)

            run_files = [
                *self.run_folder.config_files(),
                self.run_folder.history_val,
                self.run_folder.history_test,
                self.run_folder.model_card,
            ]
            for name in run_files:
                if storage.exists(name):
                    put(f"run/{os.path.basename(name)}", storage.read_bytes(name))
            for monitor, path in best_models.items():
                if path:
                    put(f"checkpoints/best_{monitor}/{os.path.basename(path)}", storage.read_bytes(path))
            for name, data in self.figures.items():
                put(f"figures/{name}", data)
            self._call(
                "log the artifacts (configs, history, model card, checkpoints, figures)",
                lambda: self.client.log_artifacts(self._run, folder),
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class _Chosen(logging.Filter):
    """Drops MLflow's advice against the pickle format, which :func:`~odeon_job.outputs.mlflow_model.log_model`
    chose knowingly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "by Pickle or CloudPickle format" not in record.getMessage()


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations, registrations, run links) and its system-metrics
    warnings (ours says it once) are not the job's output; its other warnings are."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    redact_log_handlers()  # MLflow's own handlers, installed by its import
    logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # a "Retrying" line per attempt
    pytorch_logger = logging.getLogger("mlflow.pytorch")
    if not any(isinstance(f, _Chosen) for f in pytorch_logger.filters):
        pytorch_logger.addFilter(_Chosen())
