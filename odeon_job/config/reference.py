"""The configuration reference of the documentation, written from the schema and the catalog so that it cannot
drift from what the job accepts: every key of every section with its type, default and description, then every
name of model, loss, optimizer and scheduler."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from odeon_job.config import catalog
from odeon_job.config.job_config import JobConfig
from odeon_job.config.predict_config import PredictConfig

_INTRO = """\
# Configuration reference

<!-- Written by `make docs` (odeon_job/config/reference.py) from the schema and the catalog: do not edit. -->

Every key `odeon train` and `odeon validate` accept, by section, with its type, its default (*required* when it
has none) and what it does; keys marked *Extension* are not in ODEON's specification. An unknown key is an error
(with the spelling it resembles, or the section it belongs in). The same configuration may be written in JSON
(the specification's format) or YAML (a file named `.yaml` or `.yml`). `odeon schema` prints the JSON Schema of
the same keys, for editors and CI.
"""


def _type_name(annotation: Any) -> str:
    """A type as a user reads it: ``int``, ``list of int``, ``"ce" | "bce"``, ``null`` for None."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(arguments[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(value) for value in arguments)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(_type_name(argument) for argument in arguments))
    if origin in (list, tuple):
        inner = " | ".join(dict.fromkeys(_type_name(a) for a in arguments if a is not Ellipsis)) or "any"
        return f"list of {inner}"
    if origin is dict:
        return f"object of {_type_name(arguments[1])} by {_type_name(arguments[0])}" if arguments else "object"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object (below)"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "(below)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "*required*"
    value = field.default.model_dump(mode="json") if isinstance(field.default, BaseModel) else field.default
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _sections(model: type[BaseModel], path: str) -> list[tuple[str, type[BaseModel]]]:
    """``model`` and the objects inside it, depth first, by dotted path."""
    found = [(path, model)]
    for name, field in model.model_fields.items():
        for candidate in (field.annotation, *_flat_arguments(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate is not model:
                inner = f"{path}.{name}" if path else name
                if typing.get_origin(field.annotation) is dict or _in_dict(field.annotation):
                    inner += ".<split>"
                found.extend(_sections(candidate, inner))
                break
    return found


def _flat_arguments(annotation: Any) -> list[Any]:
    arguments: list[Any] = []
    for argument in typing.get_args(annotation):
        arguments.extend([argument, *_flat_arguments(argument)])
    return arguments


def _in_dict(annotation: Any) -> bool:
    return any(typing.get_origin(argument) is dict for argument in (annotation, *_flat_arguments(annotation)))


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        rows.append(
            f"| `{name}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | "
            f"{_cell(field.description or f'The `{name}` section (below).')} |"
        )
    return rows


def configuration_reference() -> str:
    """The Markdown page ``docs/reference/configuration.md``."""
    out = [_INTRO]
    for path, model in _sections(JobConfig, ""):
        out += [f"## `{path}`" if path else "## Top level", ""]
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        if doc and not doc.startswith(("Usage docs", "A base class")):
            out += [_cell(doc), ""]
        out += [*_table(model), ""]
    out += [
        "## Names",
        "",
        "| Key | Names |",
        "|---|---|",
        f"| `train_setup.model_name` | {', '.join(f'`{name}`' for name in catalog.MODELS)} |",
        f"| `train_setup.loss` | {', '.join(f'`{name}`' for name in catalog.LOSSES)} |",
        f"| `train_setup.optimizer_config.optimizer` | {', '.join(f'`{name}`' for name in catalog.OPTIMIZERS)} |",
        f"| `train_setup.scheduler_config.scheduler` | {', '.join(f'`{name}`' for name in catalog.SCHEDULERS)} |",
        "",
        "| Model | `model_params` it uses | `encoder_weights` | ODEON's layer names (`odeon_pth`) |",
        "|---|---|---|---|",
    ]
    for name, entry in catalog.MODELS.items():
        params = ", ".join(f"`{param}`" for param in entry.params) or "-"
        out.append(
            f"| `{name}` | {params} | {'yes' if entry.pretrainable_encoder else 'no'} | "
            f"{'yes' if entry.odeon_u_net else 'no'} |"
        )
    out += ["", "| Loss | `loss_params` it uses | Probabilities | `class_imbalance` |", "|---|---|---|---|"]
    for name, loss in catalog.LOSSES.items():
        params = ", ".join(f"`{param}`" for param in loss.params) or "-"
        out.append(
            f"| `{name}` | {params} | {'softmax' if loss.softmax else 'sigmoid per class'} | "
            f"{'yes' if loss.class_weights else 'no'} |"
        )
    out += [
        "",
        "## `odeon predict`",
        "",
        "The keys of `odeon predict -c predict.json` (its options have the same names).",
        "",
    ]
    out += [*_table(PredictConfig), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(configuration_reference(), end="")
