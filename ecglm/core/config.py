"""Load and validate the pipeline config against workflow/schemas/config.schema.yaml.

Validation fills every missing key with its schema default and turns a schema error into one
message that names the offending key, e.g. ``config key 'data.fs': 250 is not one of [100, 500]``.
The Snakefile and the CLI use the same function.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ecglm.core.errors import StageError
from ecglm.core.resources import packaged

#: The settings schema, shipped in the package (workflow/schemas/config.schema.yaml links to it).
SCHEMA_PATH = packaged("ecglm.core", "config.schema.yaml")


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Set every missing property that has a default, recursively (defaults are deep-copied)."""
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # a mapping of names to objects of one schema (e.g. variants)
        for key, value in instance.items():
            if key not in properties:
                _fill_defaults(value, extra)


def _key_path(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        # jsonschema reports the parent; name the unexpected key itself
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        path = ".".join(p for p in [path, ",".join(extra)] if p)
    return path or "<top level>"


def validate_config(config: dict, schema: dict | None = None, source: str = "config") -> dict:
    """Fill defaults into ``config`` (in place) and validate it; raise StageError naming the bad key."""
    import jsonschema

    schema = load_schema() if schema is None else schema
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise StageError(f"{source}: the config must be a mapping, got {type(config).__name__}")
    _fill_defaults(config, schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    lines = [f"config key '{_key_path(e)}': {e.message}" for e in errors]
    if not errors:
        lines = _variant_override_errors(config, schema)
    if lines:
        raise StageError(f"{source} is invalid:\n  " + "\n  ".join(lines))
    _resolve_qa_source(config)
    _check_consistency(config, source)
    _add_seed_replicas(config)
    return config


def _resolve_qa_source(config: dict) -> None:
    """qa.source auto: the demo world's ECG-QA with data.source demo, else none."""
    if config["qa"]["source"] == "auto":
        config["qa"]["source"] = "demo" if config["data"]["source"] == "demo" else None


#: A seed replica of variant V is named V + SEED_SUFFIX + its seed (V-seed7).
SEED_SUFFIX = "-seed"


def _add_seed_replicas(config: dict) -> None:
    """For every seed of ``seeds`` (but the run's), a replica of each variant that has no seed of its own,
    named V-seed<S>, with that seed and, where V evaluates another variant's model, that variant's replica
    of the same seed (a V whose align_from variant has a seed of its own gets none). Idempotent: a replica
    already there is left as it is."""
    variants = config["variants"]
    originals = {name: variant for name, variant in variants.items() if variant["seed"] is None
                 and (variant["align_from"] is None or variants[variant["align_from"]]["seed"] is None)}  # fmt: skip
    for seed in config["seeds"]:
        if seed == config["seed"]:
            continue
        for name, variant in originals.items():
            replica = copy.deepcopy(variant)
            replica["seed"] = seed
            if variant["align_from"] is not None:
                replica["align_from"] = f"{variant['align_from']}{SEED_SUFFIX}{seed}"
            variants.setdefault(f"{name}{SEED_SUFFIX}{seed}", replica)


def variant_seed(config: dict, variant: str) -> int:
    """The seed of ``variant``'s alignment and evaluation: its own, else the run's."""
    own = config["variants"][variant].get("seed")
    return config["seed"] if own is None else own


#: The variant keys that override a top-level section, checked against that section's schema.
VARIANT_OVERRIDES = ("align",)


def _variant_override_errors(config: dict, schema: dict) -> list[str]:
    """Each variant's section overrides, merged over the top-level section, validated by that section's
    schema (so a mistyped key or a bad value fails at ``snakemake -n``, not when the variant's job runs)."""
    import jsonschema

    lines = []
    for name, variant in config.get("variants", {}).items():
        for section in VARIANT_OVERRIDES:
            overrides = variant.get(section) or {}
            merged = {**config[section], **overrides}
            validator = jsonschema.Draft7Validator(schema["properties"][section])
            for error in sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path)):
                key = _key_path(error)
                lines.append(f"config key 'variants.{name}.{section}.{key}': {error.message}")
    return lines


def _check_consistency(config: dict, source: str) -> None:
    data = config["data"]
    if data["fs"] not in data["sampling_rates"]:
        raise StageError(
            f"{source} is invalid:\n  config key 'data.fs': {data['fs']} Hz is not among "
            f"data.sampling_rates {data['sampling_rates']}"
        )
    if config["qa"]["source"] == "demo" and data["source"] != "demo":
        raise StageError(f"{source} is invalid:\n  config key 'qa.source': demo needs data.source demo (set it to "
                         "your ECG-QA folder, or null)")
    _check_llms(config, source)
    _check_variants(config["variants"], source)
    _check_variant_llms(config, source)
    for key, origin in (("qa.align_from", config["qa"]["align_from"] if config["qa"]["source"] else None),
                        ("chat.align_from", config["chat"]["align_from"])):  # fmt: skip
        variant = config["variants"].get(origin) if origin is not None else {}
        if variant is None or variant.get("align_from") is not None or variant.get("prompt") == "text-only":
            raise StageError(f"{source} is invalid:\n  config key '{key}': {origin!r} is not a variant that "
                             f"aligns its own model ({', '.join(config['variants'])})")  # fmt: skip
    mets_variant = config["evaluate"].get("mets_variant")
    if mets_variant is not None and mets_variant not in config["variants"]:
        raise StageError(f"{source} is invalid:\n  config key 'evaluate.mets_variant': no variant named "
                         f"{mets_variant!r} ({', '.join(config['variants'])})")  # fmt: skip


def mets_llm(config: dict) -> str:
    """The name of the LLM that the llm-mets baseline embeds the reports with: that of evaluate.mets_variant
    (null: the variant full, else the first variant)."""
    variants = config["variants"]
    chosen = config["evaluate"].get("mets_variant") or ("full" if "full" in variants else next(iter(variants)))
    return variant_llm(config, chosen)


#: The name of the llm section among the run's LLMs (the llms section names the others).
BASE_LLM = "base"


def run_llms(config: dict) -> dict[str, dict]:
    """Every LLM of the run by name: the llm section as :data:`BASE_LLM`, then the llms section."""
    return {BASE_LLM: config["llm"], **config.get("llms", {})}


def variant_llm(config: dict, variant: str) -> str:
    """The name of the LLM ``variant`` uses: its own ``llm``, else that of its align_from variant, else base."""
    settings = config["variants"][variant]
    if settings.get("llm"):
        return settings["llm"]
    source = settings.get("align_from")
    if source is not None and config["variants"][source].get("llm"):
        return config["variants"][source]["llm"]
    return BASE_LLM


def _check_llms(config: dict, source: str) -> None:
    where = f"{source} is invalid:\n  config key"
    for name in config.get("llms", {}):
        if name == BASE_LLM or not name.replace("-", "").replace("_", "").isalnum():
            raise StageError(f"{where} 'llms.{name}': an LLM name is letters, digits, - and _, and not {BASE_LLM!r} (the llm section)")
    demo = [name for name, spec in run_llms(config).items() if spec["source"] == "demo"]
    if len(demo) > 1:
        raise StageError(f"{where} 'llms': one demo LLM per run (results/{{run}}/llm/); {', '.join(demo)} are all source demo")
    for name, spec in run_llms(config).items():
        key = "llm" if name == BASE_LLM else f"llms.{name}"
        if spec["source"] != "gguf":
            continue
        by_package = spec["gguf_package"] is not None or spec["gguf_file"] is not None
        if by_package == (spec["gguf_path"] is not None):
            raise StageError(f"{where} '{key}': source gguf names either gguf_path, or gguf_package and gguf_file")
        if by_package and not (spec["gguf_package"] and spec["gguf_file"]):
            raise StageError(f"{where} '{key}': source gguf by package needs both gguf_package and gguf_file")
        if spec["gguf_path"] is not None and spec["sha256"] is None:
            raise StageError(f"{where} '{key}.sha256': a gguf_path needs its SHA-256 pinned")


def _check_variant_llms(config: dict, source: str) -> None:
    names = run_llms(config)
    for name, variant in config["variants"].items():
        where = f"{source} is invalid:\n  config key 'variants.{name}.llm'"
        if variant["llm"] is not None and (variant["llm"] not in names or variant["llm"] == BASE_LLM):
            choices = ", ".join(k for k in names if k != BASE_LLM) or "none: the llms section is empty"
            raise StageError(f"{where}: no LLM named {variant['llm']!r} in the llms section ({choices})")
        origin = variant["align_from"]
        if origin is not None and variant["llm"] is not None and variant["llm"] != variant_llm(config, origin):
            raise StageError(f"{where}: {variant['llm']!r} differs from the LLM of align_from {origin!r}, whose model it evaluates")


RESERVED_VARIANT_NAMES = ("majority", "supervised")  # the baselines' rows in the result tables


def _check_variants(variants: dict, source: str) -> None:
    for name, variant in variants.items():
        where = f"{source} is invalid:\n  config key 'variants.{name}"
        if name in RESERVED_VARIANT_NAMES or not name.replace("-", "").replace("_", "").isalnum():
            raise StageError(f"{where}': a variant name is letters, digits, - and _, and not {RESERVED_VARIANT_NAMES}")
        source_variant = variant["align_from"]
        if source_variant is not None:
            if source_variant not in variants:
                raise StageError(f"{where}.align_from': no variant named {source_variant!r}")
            if variants[source_variant]["align_from"] is not None or variants[source_variant]["prompt"] == "text-only":
                raise StageError(f"{where}.align_from': {source_variant!r} is not aligned itself")


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as err:
        raise StageError(f"{path}: cannot read config ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise StageError(f"{path}: not valid YAML: {err}") from err
    return validate_config(config, source=str(path))
