"""Typed stage configs: a dataclass read from YAML or a mapping, with unknown keys and wrong types
refused by name, ``--set key=value`` overrides typed by the field, and a YAML dump for the copy saved
beside every result. The training stages' configs (encoder, align) derive from :class:`StageConfig`."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ecglm.core.errors import StageError

Self = typing.TypeVar("Self", bound="StageConfig")


class StageConfig:
    """Mixin for a ``@dataclass`` of settings; ``LABEL`` names it in error messages."""

    LABEL: ClassVar[str] = "config"

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> "Self":
        """Build a config from a mapping; unknown keys and values of the wrong type raise StageError."""
        source = source or cls.LABEL
        if not isinstance(values, dict):
            raise StageError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
        types_ = cls.field_types()
        unknown = sorted(set(values) - set(types_))
        if unknown:
            raise StageError(
                f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)} "
                f"(known: {', '.join(types_)})"
            )
        typed = {name: coerce(values[name], types_[name], f"{source}: {name}") for name in values}
        return cls(**typed)

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


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (int, float, bool, str, X | None, list[X]); StageError if it is not one."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise StageError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise StageError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise StageError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise StageError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise StageError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # YAML 1.1 reads "1e-2" as a string
            except ValueError:
                pass
        raise StageError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a class code YAML read as a number
        raise StageError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"{where}: unsupported config field type {tp!r}")  # a bug in EncoderConfig, not user input
