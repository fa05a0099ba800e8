"""The protocol block beside every result table: what was scored, how, with what, and by which code.

A figure means little without its protocol. :func:`protocol_facts` gathers, from the run's validated config
(passed by the ``make_tables`` rule) and from the evaluation JSONs themselves:

- the data (the demo world and its generator seed, or PTB-XL and PTB-XL+ with their versions), the split
  and the selection rule, the scoring rule of each mode, the LLMs (label, path or Hub id, revision),
  the seeds, and the bootstrap behind the intervals;
- the SHA-256 of the validated config (defaults filled in; canonical JSON), the package version and the
  git commit of the code that wrote the table (with a note when the checkout has uncommitted changes).

:func:`render_protocol` writes them as a markdown block; the tables stage saves the facts, the whole config
included, beside the table (``{out}.protocol.json``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import ecglm
from ecglm.core.errors import StageError

FORMAT = "ecglm-protocol/1"


def parse_config_json(text: str | None) -> dict[str, Any] | None:
    """The run's config given as JSON text on the command line (``--config-json``), or None; StageError otherwise."""
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise StageError(f"--config-json: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise StageError(f"--config-json: expected a JSON object, got {type(config).__name__}")
    return config


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys, no spaces): equal configs, equal digests."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_version(folder: str | Path = ".") -> dict[str, Any]:
    """``{"ecglm": version, "git_commit": hash or None, "git_dirty": bool or None}`` of the checkout at ``folder``
    (None where it is not a git checkout or git is missing)."""
    facts: dict[str, Any] = {"ecglm": ecglm.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=False)  # fmt: skip
        if commit.returncode == 0:
            facts["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
            facts["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return facts


def data_description(config: Mapping[str, Any] | None) -> str:
    """The data of the run, from its config."""
    if config is None:
        return "not recorded (the table was made without the run's config)"
    data = config.get("data", {})
    fs = data.get("fs")
    if data.get("source") == "demo":
        demo = config.get("demo", {})
        return (f"the demo world: a synthetic PTB-XL look-alike of {demo.get('n_records')} records (generator seed "
                f"{demo.get('seed')}), not real ECGs; signals at {fs} Hz")  # fmt: skip
    physionet = config.get("physionet", {})
    plus = physionet.get("ptbxl_plus", {})
    return (f"PTB-XL {physionet.get('ptbxl', {}).get('version')} (PhysioNet) with PTB-XL+ {plus.get('version')}'s "
            f"12SL features; signals at {fs} Hz")  # fmt: skip


def protocol_facts(docs: Iterable[Mapping[str, Any]], config: Mapping[str, Any] | None,
                   folder: str | Path = ".") -> dict[str, Any]:
    """The protocol of a table made from the evaluation JSONs ``docs`` of the run whose config is ``config``."""
    docs = list(docs)
    scoring: dict[str, set[str]] = {}
    llms: dict[str, tuple[str, str | None]] = {}
    seeds, splits, resampled, reps, levels = set(), set(), set(), set(), set()
    for doc in docs:
        if doc.get("scoring"):
            scoring.setdefault(str(doc.get("mode")), set()).add(str(doc["scoring"]))
        model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
        source = model.get("llm") if isinstance(model.get("llm"), dict) else None
        if source:
            label = str(model.get("llm_label") or source.get("name_or_path"))
            llms[label] = (str(source.get("name_or_path")), source.get("revision"))
        if doc.get("seed") is not None:
            seeds.add(int(doc["seed"]))
        if doc.get("split"):
            splits.add(str(doc["split"]))
        intervals = doc.get("intervals") if isinstance(doc.get("intervals"), dict) else {}
        for found, key in ((resampled, "resampled"), (reps, "reps"), (levels, "level")):
            if intervals.get(key) is not None:
                found.add(intervals[key])
    return {
        "format": FORMAT,
        "data": data_description(config),
        "split": sorted(splits),
        "scoring": {mode: sorted(rules) for mode, rules in sorted(scoring.items())},
        "llms": {label: {"name_or_path": path, "revision": revision} for label, (path, revision) in sorted(llms.items())},
        "run_seed": None if config is None else config.get("seed"),
        "evaluation_seeds": sorted(seeds),
        "bootstrap": {"resampled": sorted(resampled), "reps": sorted(reps), "level": sorted(levels)},
        "config_sha256": None if config is None else config_digest(config),
        "code": code_version(folder),
        "config": None if config is None else dict(config),
    }


def render_protocol(facts: Mapping[str, Any], facts_file: str | None = None) -> str:
    """The markdown protocol block of ``facts`` (:func:`protocol_facts`)."""
    unknown = "not recorded"
    split = " and ".join(facts["split"]) or unknown
    scoring = "; ".join(f"{mode}: {' / '.join(rules)}" for mode, rules in facts["scoring"].items())
    llms = "; ".join(
        f"{label} ({info['name_or_path']}" + (f" at revision {info['revision']})" if info["revision"] else ")")
        for label, info in facts["llms"].items()
    ) or "none"
    boot = facts["bootstrap"]
    code = facts["code"]
    commit = code["git_commit"] or "unknown (not a git checkout)"
    if code["git_dirty"]:
        commit += ", with uncommitted changes"
    digest = facts["config_sha256"]
    config = "not given (`ecglm tables --config-json`)" if digest is None else (
        f"SHA-256 {digest[:16]} of the validated config with its defaults"
        + (f" (the whole config: {facts_file})" if facts_file else ""))  # fmt: skip
    seeds = ", ".join(str(s) for s in facts["evaluation_seeds"]) or "none (the baselines draw nothing)"
    run_seed = unknown if facts["run_seed"] is None else facts["run_seed"]
    intervals = unknown if not boot["reps"] else (
        f"{' / '.join(f'{v:.0%}' for v in boot['level'])} percentile bootstrap, "
        f"{' / '.join(f'{v:,}' for v in boot['reps'])} draws of the test {' / '.join(boot['resampled'])} values "
        "with replacement (a patient's ECGs drawn together)")  # fmt: skip
    rows = [
        ("data", facts["data"]),
        ("split and selection", f"the {split} split (PTB-XL's strat_fold 10); per task, the ECGs with exactly one of "
                                "its five classes (ECGs with several or none are left out, counted in each JSON); a row "
                                "marked \"n of m\" scores a class-stratified subset fixed by the seed"),
        ("scoring", scoring or unknown),
        ("LLMs", llms),
        ("seeds", f"run {run_seed} (every stage derives its seed from it); evaluation {seeds}"),
        ("intervals", intervals),
        ("config", config),
        ("code", f"ecglm {code['ecglm']}, git commit {commit}"),
    ]  # fmt: skip
    lines = ["## Protocol", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value.replace('|', '/')} |" for key, value in rows]
    return "\n".join(lines) + "\n"
