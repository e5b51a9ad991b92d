"""The ``odeon`` command: argument parsing and error reporting only.

A user's mistake (:class:`~odeon_job.errors.OdeonError`) prints ``odeon: error: ...``, one line per
problem, and exits 2; ``-v`` adds the traceback and debug logs. The imports inside functions are kept there
for start-up time: the configuration (pydantic), torch, Lightning, rasterio and MLflow are imported by the
commands that need them, so ``--help``, ``schema`` and ``job`` answer at once and SIGTERM is handled before the
seconds torch takes to import.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odeon_job.commands import follow_job
from odeon_job.commands.follow_job import parse_duration
from odeon_job.errors import ConfigError, OdeonError, one_line
from odeon_job.process.shutdown import EXIT_TERMINATED, GracefulStop, Terminated, handler_kept
from odeon_job.redaction import redact, redact_log_handlers, shorten

if TYPE_CHECKING:
    from odeon_job.config import JobConfig
    from odeon_job.tasks.train import TrainResult

log = logging.getLogger("odeon")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _configure_logging(verbose: bool) -> None:
    """The console: INFO (DEBUG with ``-v``) from the first process of each machine or pod (each pod has a
    log of its own); only errors from the other processes, which share that log and would repeat every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    log.handlers[:] = [handler]
    level = logging.DEBUG if verbose else logging.INFO
    from odeon_job.process.launch import is_first_on_this_machine

    log.setLevel(level if is_first_on_this_machine() else logging.ERROR)
    log.propagate = False

    redact_log_handlers()


def _config_source(args: argparse.Namespace) -> str:

    source = args.config or os.environ.get("ODEON_CONFIG")
    if not source:
        raise ConfigError(
            "no configuration: give -c CONFIG (a path, a URL, or - for the standard input) or set ODEON_CONFIG"
        )
    return source


def _load_config(args: argparse.Namespace) -> JobConfig:
    from odeon_job.config import load_config
    from odeon_job.process.launch import hand_over_config, inherited_config

    # The processes Lightning starts for DDP could not read the configuration again from the standard input
    # (or could read a changed URL): the first process hands its validated one over.
    config = inherited_config()
    if config is None:
        config = load_config(_config_source(args), args.overrides or ())
        hand_over_config(config)
    return config


def _train(args: argparse.Namespace) -> int:
    from odeon_job.config import DEFAULT_GRACE_PERIOD

    stop = GracefulStop(DEFAULT_GRACE_PERIOD).install()  # before torch's imports: seconds of start-up
    from odeon_job.tasks.train import train

    result = train(_load_config(args), stop)
    _report(result)
    return 0


def _report(result: TrainResult) -> None:
    final = result.final
    log.info("final validation: loss %.4f, mIoU %.4f", final["loss"], final["Average/IoU"])
    if result.test_entry:
        log.info(
            "test (best val_loss checkpoint): loss %.4f, mIoU %.4f",
            result.test_entry["loss"],
            result.test_entry["Average/IoU"],
        )
    log.info("best val_loss checkpoint: %s", result.best_checkpoint)
    log.info("run folder: %s", result.run_folder)


def _print(text: str, **options: Any) -> None:
    """``print`` for lines that may hold URLs (config sources, CSV rows, servers): credentials redacted."""

    print(redact(text), **options)


def _validate(args: argparse.Namespace) -> int:
    from odeon_job.tasks.validate import format_summary, validate

    config = _load_config(args)
    summary = validate(config, args.rows)
    _print(f"config: {_config_source(args)}: valid")
    if args.services:
        from odeon_job.tasks.reachability import check_services, mlflow_server

        problems = check_services(config)
        summary.problems.extend(problems)
        if not problems:
            server = mlflow_server(config)
            _print(
                f"output folder {config.output_setup.output_folder}: writable"
                + (f"; MLflow at {server}: answers" if server else "")
            )
    for line in format_summary(summary):
        _print(line)
    for warning in summary.warnings[:20]:
        log.warning("warning: %s", warning)
    if summary.problems:
        for problem in summary.problems[:20]:
            _print(f"odeon: error: {problem}", file=sys.stderr)
        more = len(summary.problems) - 20
        if more > 0:
            _print(f"odeon: error: ... and {more} more", file=sys.stderr)
        _print(f"{len(summary.problems)} problem(s) found", file=sys.stderr)
        return EXIT_USER_ERROR
    checked = sum(min(count, args.rows or count) for count in summary.counts.values())
    _print(f"OK: {checked} samples checked")
    return 0


def _schema(args: argparse.Namespace) -> int:
    import json

    from odeon_job.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from odeon_job.commands.demo import write_demo
    from odeon_job.config import load_config
    from odeon_job.tasks.train import train

    log.info("writing the demo dataset under %s", os.path.join(args.output, "data"))
    dataset, config_path = write_demo(args.output)
    log.info("training with %s", config_path)
    result = train(load_config(config_path))
    _report(result)
    log.info(
        "final validation mIoU %.3f (predicting the majority class everywhere gives %.3f)",
        result.final["Average/IoU"],
        dataset.majority_miou,
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from odeon_job.config import DEFAULT_GRACE_PERIOD, load_predict_config

    stop = GracefulStop(DEFAULT_GRACE_PERIOD).install()
    options = {
        "model": args.model,
        "images": args.images,
        "output": args.output,
        "output_type": args.output_type,
        "patch_size": args.patch_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
    }
    devices = {
        key: value
        for key, value in (
            ("accelerator", args.accelerator),
            ("device", args.device),
            ("num_workers", args.num_workers),
        )
        if value is not None
    }
    if devices:
        options["device_setup"] = devices
    config = load_predict_config(args.config or os.environ.get("ODEON_CONFIG"), options, args.overrides or ())
    from odeon_job.tasks.predict import predict

    result = predict(config, stop)
    log.info(
        "predict: %d map(s) written, %d already there, in %s",
        len(result.written),
        len(result.skipped),
        redact(result.output),
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from odeon_job.config import DeviceSetup
    from odeon_job.tasks.evaluate import EXIT_WORSE, comparison_lines, evaluate, is_worse

    devices = DeviceSetup.model_validate(
        {key: value for key, value in (("accelerator", args.accelerator), ("device", args.device)) if value is not None}
        | {"num_workers": args.num_workers}
    )
    new = evaluate(args.model, args.data, args.output, args.output_type, args.batch_size, devices)
    log.info(
        "evaluate: mIoU %.4f, loss %.4f; report in %s", new.entry["Average/IoU"], new.entry["loss"], redact(new.output)
    )
    if not args.against:
        return 0
    import os.path

    against = evaluate(
        args.against, args.data, os.path.join(args.output, "against"), args.output_type, args.batch_size, devices
    )
    labels = [key[: -len("/IoU")] for key in new.entry if key.endswith("/IoU") and key != "Average/IoU"]
    for line in comparison_lines(new, against, labels, args.metric):
        print(line)
    if is_worse(new.entry, against.entry, args.metric, args.margin):
        print(f"gate: {args.metric} of {redact(args.model)} is worse than {redact(args.against)}'s: not promoted")
        return EXIT_WORSE
    print(f"gate: {args.metric} of {redact(args.model)} is as good or better: promote it")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from odeon_job.tasks.stats import compute_stats, describe, pasteable

    stats = compute_stats(_load_config(args), args.rows, args.windows)
    for line in describe(stats):
        log.info("stats: %s", line)
    print(json.dumps(pasteable(stats), indent=2))
    return 0


def _convert_history(args: argparse.Namespace) -> int:
    from odeon_job.tasks.convert_history import convert_file

    entries = convert_file(args.source, args.target, args.to, sanity_check=not args.no_sanity_check)
    log.info(
        "%s: %d entries written in %s's format", args.target, entries, "ODEON" if args.to == "odeon" else "odeon-job"
    )
    return 0


def _job(args: argparse.Namespace) -> int:

    read = follow_job.job_reader(args.context)
    namespace = args.namespace or follow_job.default_namespace()
    if args.job_command == "status":
        result, lines = follow_job.status(read, namespace, args.name)
        print("\n".join(lines))
        return 0 if result is None else result
    return follow_job.wait(read, namespace, args.name, args.timeout, args.interval)


def _at_least_one(text: str) -> int:
    """A count given on the command line: a whole number >= 1 (0 or -1 rows would silently mean none, or all but
    the last)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logs, and tracebacks with errors")
    with_config = argparse.ArgumentParser(add_help=False, parents=[common])
    with_config.add_argument(
        "-c",
        "--config",
        help="the configuration, JSON (or YAML when named .yaml/.yml): a path, a URL (s3://, gs://, "
        "https://...) or - for the standard input (default: $ODEON_CONFIG)",
    )
    with_config.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="override one key of the configuration, such as train_setup.epochs=5 (the "
        "value is read as JSON when it parses, else as a string); repeatable",
    )

    parser = argparse.ArgumentParser(
        prog="odeon",
        description="Train semantic-segmentation models on GeoTIFF tiles (ODEON's train tool as a batch job).",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("train", parents=[with_config], help="train a model as the configuration says").set_defaults(
        handler=_train
    )
    validate = commands.add_parser(
        "validate", parents=[with_config], help="check the configuration and every CSV row without training"
    )
    validate.add_argument("--rows", type=_at_least_one, metavar="N", help="check only the first N rows of each split")
    validate.add_argument(
        "--services",
        action="store_true",
        help="also check that the output folder takes a "
        "write and that the MLflow server answers (the Helm chart's test)",
    )
    validate.set_defaults(handler=_validate)
    commands.add_parser("schema", parents=[common], help="print the configuration's JSON Schema").set_defaults(
        handler=_schema
    )
    demo = commands.add_parser(
        "demo", parents=[common], help="write a small dataset and train on it (CPU, a few minutes)"
    )
    demo.add_argument(
        "--output", default="odeon-demo", help="folder for the dataset and the run (default: %(default)s)"
    )
    demo.set_defaults(handler=_demo)

    predict = commands.add_parser(
        "predict",
        parents=[with_config],
        help="apply a trained model to images without masks: one georeferenced map per image",
    )
    predict.add_argument(
        "--model",
        help="a run folder, a .ckpt, a .pth beside its run's config.json, or an MLflow model URI "
        "(models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/model)",
    )
    predict.add_argument(
        "--images", help="a CSV of images (one per row), a folder, a glob or an s3:// prefix of GeoTIFFs"
    )
    predict.add_argument("--output", help="the folder the maps go to (local or s3://)")
    predict.add_argument(
        "--output-type",
        choices=("class", "float32", "uint8", "bit"),
        help="class: one band of classes, coloured and named (default); float32/uint8: a probability band per "
        "class; bit: one 1-bit band per class",
    )
    predict.add_argument("--patch-size", type=_at_least_one, help="window size (default: the model's)")
    predict.add_argument("--overlap", type=int, help="pixels shared by neighbouring windows (default: 0)")
    predict.add_argument("--batch-size", type=_at_least_one, help="windows per batch (default: 8)")
    predict.add_argument("--accelerator", help="cpu, gpu or auto (default: a GPU when one is visible)")
    predict.add_argument("--device", type=int, help="devices (processes) to use: 1 (default), -1 for all GPUs")
    predict.add_argument("--num-workers", type=int, help="DataLoader workers reading windows (default: 4)")
    predict.set_defaults(handler=_predict)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="score a trained model on a labelled CSV without training: the test phase's history, figures and maps",
    )
    evaluate.add_argument("--model", required=True, help="a run folder, a .ckpt, a .pth or an MLflow model URI")
    evaluate.add_argument("--data", required=True, help="a CSV of image,mask rows (tiles, or scenes in windows)")
    evaluate.add_argument("--output", required=True, help="a new folder for the report (local or s3://)")
    evaluate.add_argument(
        "--output-type", choices=("class", "float32", "uint8", "bit"), default="class", help="the maps written"
    )
    evaluate.add_argument("--batch-size", type=_at_least_one, help="default: the training's")
    evaluate.add_argument("--accelerator", help="cpu, gpu or auto (default: a GPU when one is visible)")
    evaluate.add_argument("--device", type=int, help="devices (processes) to use (default: 1)")
    evaluate.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (default: %(default)s)")
    evaluate.add_argument(
        "--against",
        metavar="MODEL2",
        help="the model in place (e.g. models:/NAME@champion): both are scored on the same data; exit 3 when "
        "MODEL is worse (CI's promotion gate)",
    )
    evaluate.add_argument(
        "--metric", default="Average/IoU", help="the figure the gate compares (default: %(default)s; loss: lower wins)"
    )
    evaluate.add_argument(
        "--margin", type=float, default=0.0, help="how much worse MODEL may be and still pass (default: 0)"
    )
    evaluate.set_defaults(handler=_evaluate)

    stats = commands.add_parser(
        "stats",
        parents=[with_config],
        help="compute normalization_weights and "
        "class_imbalance over every tile; prints the JSON to paste into the configuration",
    )
    stats.add_argument("--rows", type=_at_least_one, metavar="N", help="use only the first N rows of each split")
    stats.add_argument(
        "--windows",
        type=_at_least_one,
        metavar="N",
        help="scenes (data_source.patch_size): read N "
        "windows per split, spread over its scenes, instead of every pixel",
    )
    stats.set_defaults(handler=_stats)
    convert = commands.add_parser(
        "convert-history", parents=[common], help="turn an ODEON history (metrics.json) into ours, or ours into ODEON's"
    )
    convert.add_argument("source", help="the history to read (a path or URL)")
    convert.add_argument("target", help="where to write the converted history")
    convert.add_argument(
        "--to",
        choices=("ours", "odeon"),
        required=True,
        help="ours: ODEON's metrics.json → history_val.json; odeon: the reverse",
    )
    convert.add_argument(
        "--no-sanity-check",
        action="store_true",
        help='with --to ours: ODEON\'s entry "0" is '
        "an epoch (its trainer ran no sanity check), not the sanity check to leave out",
    )
    convert.set_defaults(handler=_convert_history)

    job = commands.add_parser(
        "job",
        parents=[common],
        help="follow a training submitted as a Kubeflow PyTorchJob (helm install ... helm/odeon-train)",
    )
    job_commands = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    with_job = argparse.ArgumentParser(add_help=False, parents=[common])
    with_job.add_argument("name", help="the PyTorchJob's name (the Helm release's)")
    with_job.add_argument("-n", "--namespace", help="default: the pod's own namespace, else the kubeconfig's")
    with_job.add_argument("--context", help="kubeconfig context (default: the current one)")
    job_commands.add_parser(
        "status", parents=[with_job], help="print the job's conditions and pods; exit 0 unless it failed"
    )
    wait = job_commands.add_parser(
        "wait",
        parents=[with_job],
        help="print the job's conditions as they change "
        "until it ends: exit 0 when it succeeded, 1 when it failed, 124 at --timeout",
    )
    wait.add_argument("--timeout", type=parse_duration, help="give up after this long (3600, 90m, 6h; default: never)")
    wait.add_argument(
        "--interval", type=parse_duration, default=5.0, help="seconds between two reads (default: %(default)s)"
    )
    job.set_defaults(handler=_job)
    return parser


#: An error line longer than this is cut (a user's value is quoted shorter still: errors.quote).
MAX_ERROR_LINE = 2000


def shorten_line(line: str) -> str:
    """An error line as printed: redacted, then cut (never the reverse)."""

    return shorten(line, MAX_ERROR_LINE)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)

    from odeon_job.process.launch import handing_over

    try:
        with handing_over(), handler_kept():
            return args.handler(args)
    except Terminated as stopped:
        print(f"odeon: {redact(str(stopped))}", file=sys.stderr)
        return EXIT_TERMINATED
    except OdeonError as error:
        if args.verbose:
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        for line in one_line(error).splitlines():
            print(f"odeon: error: {shorten_line(line)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("odeon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
