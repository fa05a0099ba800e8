"""Typed stage configs, each setting written once: a ``@dataclass`` field made by :func:`setting` holds the
setting's type (the annotation), default, description and constraints. From that one source come

- the checks and the conversion of a value (pydantic validates each field on construction, so a
  ``--set lr=1e-2`` string becomes a float and ``epochs: 0`` is refused, naming the key);
- the section of the pipeline's settings schema (``ecglm/core/config.schema.yaml``; written by
  ``scripts/settings_schema.py``, and a test fails when the committed copy differs);
- the YAML dump saved beside every result.

Unknown keys are refused by name, and ``--set key=value`` overrides are typed by the field. The training
stages' configs (encoder, demo LLM, align) derive from :class:`StageConfig`; checks that relate two
settings stay in their ``validate()``."""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Sequence

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from ecglm.core.errors import StageError

Self = typing.TypeVar("Self", bound="StageConfig")

#: How pydantic converts a value: YAML and ``--set`` give typed values; a number where a string is expected
#: (a class code YAML read as a number) becomes the string, and strings lose surrounding blanks.
_CONVERSION = ConfigDict(coerce_numbers_to_str=True, str_strip_whitespace=True)

#: The ``device`` setting of the training stages: auto (CUDA if available), cpu, cuda or cuda:N.
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
#: The ``deterministic`` setting of the training stages (one description for each of them).
DETERMINISTIC_DOC = """torch's deterministic algorithms (the default: bit-identical reruns and resumes on one machine).
    false lets a GPU pick faster nondeterministic kernels (cuDNN benchmark-free, atomics in scatter/index ops): a
    rerun then differs in the last bits and a resumed run no longer ends bit-identical to an uninterrupted one."""


def setting(default: Any, description: str, *, by_rule: bool = False, unique: bool = False, **constraints: Any) -> Any:
    """A dataclass field with its description and constraints (pydantic ``Field`` keywords: ``ge``, ``gt``,
    ``le``, ``lt``, ``pattern``, ``min_length``, ``max_length``). ``unique``: a list without repeats.
    ``by_rule``: set by the Snakemake rules, not a key of the config section (left out of the schema)."""
    metadata = {"description": " ".join(description.split()), "constraints": constraints, "by_rule": by_rule,
                "unique": unique}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


def _no_bool_items(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and any(isinstance(item, bool) for item in value):
        raise ValueError(f"expected numbers, got {list(value)!r}")
    return value


def _a_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _comma_list(value: Any) -> Any:
    """``--set classes=NORM,MI`` as the list it means."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("values must be distinct")
    return values


@functools.cache
def _adapters(cls: type) -> dict[str, TypeAdapter]:
    """One pydantic validator per field of the dataclass ``cls``: its annotation with its constraints."""
    hints = typing.get_type_hints(cls)
    adapters = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        tp = hints[f.name]
        extras: list[Any] = [Field(description=meta.get("description"), **meta.get("constraints", {}))]
        if tp in (int, float, int | None, float | None):
            extras.append(BeforeValidator(_not_a_bool))  # pydantic would read true as 1
        elif tp is bool:
            extras.append(BeforeValidator(_a_bool))  # pydantic would read 1 as true
        elif typing.get_origin(tp) is list:
            if typing.get_args(tp)[0] in (int, float):
                extras.append(BeforeValidator(_no_bool_items))  # [true, 5] is not [1, 5]
            extras.append(BeforeValidator(_comma_list))
        if meta.get("unique"):
            extras += [Field(json_schema_extra={"uniqueItems": True}), AfterValidator(_distinct)]
        adapters[f.name] = TypeAdapter(Annotated[(hints[f.name], *extras)], config=_CONVERSION)
    return adapters


def _problem(err: ValidationError) -> str:
    """The first problem of a pydantic error, as a sentence fragment (``[1]: input should be ...``)."""
    first = err.errors()[0]
    where = "".join(f"[{part}]" for part in first["loc"])
    message = first["msg"]
    return f"{where}{': ' if where else ''}{message[:1].lower()}{message[1:]}"


class StageConfig:
    """Mixin for a ``@dataclass`` of settings; ``LABEL`` names it in error messages."""

    LABEL: ClassVar[str] = "config"
    SECTION_DESCRIPTION: ClassVar[str] = ""  # the description of its section of the settings schema

    def __post_init__(self) -> None:
        """Check and convert every field (the dataclass may be frozen), then the checks across settings."""
        for name, adapter in _adapters(type(self)).items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, adapter.validate_python(value))
            except ValidationError as err:
                raise StageError(f"{self.LABEL}: {name} = {value!r}: {_problem(err)}") from None
        self.validate()

    def validate(self) -> None:
        """Checks that relate several settings (a subclass's); raise StageError naming the setting."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> "Self":
        """Build a config from a mapping; unknown keys and bad values raise StageError naming ``source``."""
        source = source or cls.LABEL
        if not isinstance(values, dict):
            raise StageError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise StageError(
                f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)} (known: {', '.join(known)})"
            )
        try:
            return cls(**values)
        except StageError as err:
            raise (err if source == cls.LABEL else StageError(f"{source}: {err}")) from None

    @classmethod
    def schema_section(cls) -> dict[str, Any]:
        """The JSON schema of the config section these settings are (every field but those set by the rules),
        each key with its type, constraints, default and description."""
        properties = {}
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.metadata.get("by_rule"):
                continue
            spec = _adapters(cls)[f.name].json_schema()
            spec["default"] = getattr(defaults, f.name)
            properties[f.name] = _plain(spec)
        return {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "description": " ".join(cls.SECTION_DESCRIPTION.split()),
            "properties": properties,
        }

    @classmethod
    def add_options(cls, parser: Any, threads: bool = False) -> None:
        """The command-line options of a stage configured by ``cls``: ``--config``, ``--set`` (repeatable) and,
        with ``threads``, ``--threads`` (torch's CPU threads). :meth:`from_args` reads the first two."""
        keys = ", ".join(f.name for f in dataclasses.fields(cls))
        parser.add_argument("--config", type=Path, default=None,
                            help=f"YAML mapping of {cls.LABEL} settings (unknown keys are an error)")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help=f"override one setting after --config, typed by its field (repeatable). Keys: {keys}")
        if threads:
            parser.add_argument("--threads", type=_positive_int, default=None,
                                help="CPU threads for torch (default: torch's choice); CPU results are bit-identical "
                                     "per thread count")  # fmt: skip

    @classmethod
    def from_args(cls, args: Any) -> "Self":
        """The settings that ``--config`` and ``--set`` (:meth:`add_options`) name: defaults, file, overrides."""
        config = cls.from_yaml(args.config) if args.config else cls()
        return config.with_overrides(args.overrides) if args.overrides else config

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Self":
        """Read a YAML mapping of settings (missing keys take their defaults; unknown keys are an error)."""
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise StageError(f"{path}: cannot read {cls.LABEL} ({err.strerror})") from err
        except yaml.YAMLError as err:
            raise StageError(f"{path}: not valid YAML: {err}") from err
        return cls.from_dict(values or {}, source=str(path))

    def with_overrides(self, assignments: Sequence[str]) -> "Self":
        """A copy with ``key=value`` assignments applied, each value typed by its field (YAML syntax)."""
        import yaml

        values = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                raise StageError(f"--set {assignment!r}: expected KEY=VALUE")
            if key not in values:
                raise StageError(f"--set {assignment!r}: unknown key {key!r} (known: {', '.join(values)})")
            try:
                values[key] = yaml.safe_load(raw) if raw.strip() else raw
            except yaml.YAMLError:
                values[key] = raw
        return type(self).from_dict(values, source="--set")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    """A field's schema in the settings file's style: ``anyOf`` of a type and null as a type list, the keys
    in reading order (type, constraints, default, description)."""
    spec = dict(spec)
    options = spec.pop("anyOf", None)
    if options is not None:
        if len(options) != 2 or {"type": "null"} not in options:
            raise TypeError(f"unsupported field type in a settings schema: {options}")  # a bug in a config class
        (inner,) = [o for o in options if o != {"type": "null"}]
        spec = {**inner, **spec, "type": [inner["type"], "null"]}
    if "const" in spec:  # a Literal of one value
        spec["enum"] = [spec.pop("const")]
    if "items" in spec:
        spec["items"] = _plain(spec["items"])
    order = ["type", "enum", "items", "minItems", "maxItems", "uniqueItems", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
             "pattern", "default", "description"]
    unknown = sorted(set(spec) - set(order))
    if unknown:
        raise TypeError(f"unsupported schema keywords {unknown} in {spec}")  # a bug in a config class
    return {key: spec[key] for key in order if key in spec}
