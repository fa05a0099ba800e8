#!/usr/bin/env python
"""The README's figures of a run, generated from the run's outputs, never typed by hand.

    python scripts/readme_figures.py snapshot results/demo   # write docs/figures/demo.json from a finished run
    python scripts/readme_figures.py write                   # render every snapshot into its README block
    python scripts/readme_figures.py check                   # exit 1 if a README block differs from its snapshot
    python scripts/readme_figures.py compare results/demo    # a later run against the snapshot (hashes, figures)

A snapshot (``docs/figures/<run>.json``, committed) holds the figures the README quotes (every row of the
classification table: balanced accuracy per task with its 95% interval; the ECG check of each alignment),
the SHA-256 of the run's tables and weights, the time per rule from the benchmark files, and the machine
(CPU model, cores), commit and config digest they were made with, so a run elsewhere can be compared. The
README block between ``<!-- figures:<run> -->`` and ``<!-- /figures:<run> -->`` is rendered from it; a test
(tests/test_readme_figures.py) fails when the README and the snapshot disagree.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import sys
from pathlib import Path

from ecglm.core.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SNAPSHOTS = ROOT / "docs" / "figures"
TASKS = ("diagnostic", "rhythm", "form")
#: The files whose SHA-256 a snapshot records (relative to the run folder; globs).
HASHED = ("tables/classification.csv", "tables/ablation.csv", "encoder/pretrained/model.safetensors",
          "encoder/simclr/model.safetensors", "encoder/mets-*/model.safetensors", "llm/model.safetensors",
          "align/*/model.safetensors", "tables/qa.csv", "qa/finetune/*/model.safetensors",
          "qa/finetune/*/adapter/adapter_model.safetensors", "chat/model.safetensors",
          "chat/adapter/adapter_model.safetensors")  # fmt: skip
QA_COLUMNS = ("single-verify", "single-choose", "single-query", "avg")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: the instruction sets that decide which kernels torch, oneDNN and MKL dispatch on an x86 CPU
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
#: environment variables that cap those kernels (set, they are part of how a run was made)
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")


def cpu_kernels() -> dict:
    """torch's version and dispatched CPU capability, the CPU's instruction sets of :data:`ISA_FLAGS` and the
    settings of :data:`ISA_ENV`: what decides the floating-point order of the CPU kernels (a weight's last
    bits, and so its SHA-256, can differ between two CPUs whose models read the same)."""
    import torch

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
            "isa": [f for f in ISA_FLAGS if f in flags], "env": {k: os.environ[k] for k in ISA_ENV if k in os.environ}}  # fmt: skip


def _float(text: str) -> float | None:
    return None if text in ("", None) else float(text)


def snapshot(run: Path) -> dict:
    """The figures, hashes, rule times and machine of the finished run at ``run`` (results/<name>)."""
    table = run / "tables" / "classification.csv"
    if not table.is_file():
        raise SystemExit(f"{table}: no classification table (finish the run first)")
    rows = []
    with open(table, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["variant"].startswith("paper"):
                continue
            entry = {"variant": row["variant"], "mode": row["mode"], "llm": row["llm"]}
            for task in TASKS:
                value = _float(row[f"{task}_balanced_acc"])
                low, high = _float(row[f"{task}_balanced_acc_low"]), _float(row[f"{task}_balanced_acc_high"])
                n, of = row[f"{task}_n"], row[f"{task}_of"]
                entry[task] = None if value is None else {"value": value, "low": low, "high": high,
                                                          "n": int(n), "of": int(of) if of else None}  # fmt: skip
            rows.append(entry)
    checks = {metrics.parent.name: check for metrics in sorted((run / "align").glob("*/metrics.json"))
              if (check := ecg_check(metrics))}  # fmt: skip
    chat = ecg_check(run / "chat" / "metrics.json")
    retrieval = {metrics.parent.name: mets_recall(metrics) for metrics in sorted((run / "encoder").glob("mets-*/metrics.json"))}
    hashes = {str(p.relative_to(run)): sha256(p) for pattern in HASHED for p in sorted(run.glob(pattern))}
    times = {}
    for bench in sorted((run / "benchmarks").rglob("*.tsv")):
        with open(bench, newline="") as fh:
            first = next(csv.DictReader(fh, delimiter="\t"), None)
        if first is None:
            raise SystemExit(f"{bench}: an empty benchmark file (the job did not finish?)")
        times[str(bench.relative_to(run / "benchmarks").with_suffix(""))] = round(float(first["s"]), 1)
    qa = qa_rows(run / "tables" / "qa.csv")
    protocol = json.loads((run / "tables" / "classification.protocol.json").read_text())
    if protocol["config_sha256"] is None:
        raise SystemExit(f"{run}/tables: made without the run's config (run the tables through Snakemake)")
    return {
        "run": run.name,
        "made_with": {"cpu": cpu_model(), "cores": os.cpu_count(), "kernels": cpu_kernels(),
                      "git_commit": protocol["code"]["git_commit"], "git_dirty": protocol["code"]["git_dirty"],
                      "config_sha256": protocol["config_sha256"]},
        "classification": rows,
        "ecg_check": checks,
        **({"qa": qa} if qa is not None else {}),
        **({"chat_check": chat} if chat else {}),
        **({"mets_recall": retrieval} if retrieval else {}),
        "sha256": hashes,
        "rule_seconds": times,
    }  # fmt: skip


def ecg_check(metrics: Path) -> dict | None:
    """The ECG check a training stage wrote into ``metrics`` (true vs another record's ECG), or None."""
    check = json.loads(metrics.read_text()).get("ecg_check") if metrics.is_file() else None
    if not check:
        return None
    diff = check["difference"]
    return {"n_samples": check["n_samples"], "true_loss": check["loss_true"], "shuffled_loss": check["loss_shuffled"],
            "difference": diff["mean"], "low": diff["low"], "high": diff["high"]}  # fmt: skip


def mets_recall(metrics: Path) -> dict:
    """The METS encoder's sanity check (validation ECG-to-report recall@5, its interval and chance) and text encoder."""
    doc = json.loads(metrics.read_text())
    r, text = doc["recall_at_5"], doc["text_encoder"]
    return {"text_encoder": text["name"] if text["name"] != "llm" else f"llm ({text['llm']})", "value": r["value"],
            "low": r["low"], "high": r["high"], "chance": r["chance"], "n_ecgs": r["n_ecgs"], "n_reports": r["n_reports"]}  # fmt: skip


def qa_rows(table: Path) -> list[dict] | None:
    """The rows of the run's ECG-QA table (exact match per type and avg with intervals), or None without one."""
    if not table.is_file():
        return None
    rows = []
    with open(table, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if "paper" in row["model"]:
                continue
            entry = {"model": row["model"], "reading": row["reading"], "questions": int(row["questions"]),
                     "unparsed": _float(row["unparsed"])}  # fmt: skip
            for column in QA_COLUMNS:
                value = _float(row[column])
                entry[column] = None if value is None else {"value": value, "low": _float(row[f"{column}_low"]),
                                                            "high": _float(row[f"{column}_high"])}  # fmt: skip
            rows.append(entry)
    return rows


def _cell(figure: dict | None) -> str:
    if figure is None:
        return "n/a"
    interval = "n/a" if figure["low"] is None else f"{figure['low']:.2f}-{figure['high']:.2f}"
    return f"{figure['value']:.2f} [{interval}]"


def _kernels(made: dict) -> str:
    """", torch 2.13.0 with AVX512 kernels" (and any kernel cap set), or "" for a snapshot without them."""
    k = made.get("kernels")
    if not k:
        return ""
    caps = "".join(f", {name}={value}" for name, value in sorted(k["env"].items()))
    return f", torch {k['torch']} with {k['capability']} kernels{caps}"


def render(snap: dict) -> str:
    """The README block of a snapshot (markers excluded)."""
    made = snap["made_with"]
    commit = (made["git_commit"] or "unknown")[:7] + (" with uncommitted changes" if made["git_dirty"] else "")
    lines = [
        f"Balanced accuracy on the test ECGs with its 95% interval over patients, from `results/{snap['run']}` "
        f"(generated by `scripts/readme_figures.py` from `docs/figures/{snap['run']}.json`: main {commit}, "
        f"config {made['config_sha256'][:12]}, {made['cpu']}, {made['cores']} cores{_kernels(made)}):",
        "",
        "| variant | mode | LLM | test ECGs | diagnostic | rhythm | form |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in snap["classification"]:
        counts = " / ".join("n/a" if row[t] is None else (f"{row[t]['n']} of {row[t]['of']}" if row[t]["of"]
                                                           else str(row[t]["n"])) for t in TASKS)  # fmt: skip
        llm = row["llm"] or "-"
        lines.append(f"| {row['variant']} | {row['mode']} | {llm} | {counts} | "
                     + " | ".join(_cell(row[t]) for t in TASKS) + " |")  # fmt: skip
    if snap["ecg_check"]:
        lines += ["", "The ECG check after each alignment (validation loss on the target spans with other records' "
                      "ECGs minus with the true ones; > 0: the ECG reaches the LLM):", ""]  # fmt: skip
        for name, c in snap["ecg_check"].items():
            lines.append(f"- {name}: {c['true_loss']:.4f} true vs {c['shuffled_loss']:.4f} shuffled, difference "
                         f"{c['difference']:.4f} [{c['low']:.4f}, {c['high']:.4f}] ({c['n_samples']} samples)")
    if snap.get("chat_check"):
        c = snap["chat_check"]
        lines += ["", f"The chat model's ECG check (`results/{snap['run']}/chat`: the answer loss of held-out dialogues about "
                      "test ECGs, their findings left out of the system text, with another record's ECG minus with "
                      "their own; > 0: the ECG makes the reference answers more likely):", "",
                  f"- {c['true_loss']:.4f} true vs {c['shuffled_loss']:.4f} shuffled, difference {c['difference']:.4f} "
                  f"[{c['low']:.4f}, {c['high']:.4f}] ({c['n_samples']} dialogues)"]  # fmt: skip
    if snap.get("mets_recall"):
        lines += ["", "The METS encoders' sanity check (validation ECGs: ECG-to-report recall@5 among the distinct "
                      "validation reports, 95% interval over patients, beside chance = 5 / distinct reports):", ""]  # fmt: skip
        for name, r in snap["mets_recall"].items():
            lines.append(f"- {name} (text encoder {r['text_encoder']}): {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}], "
                         f"chance {r['chance']:.3f} ({r['n_ecgs']} ECGs, {r['n_reports']} reports)")  # fmt: skip
    if snap.get("qa"):
        lines += ["", "ECG-QA, exact match of the answer set on the test questions with its 95% interval over "
                      "patients (`tables/qa.md`; unparsed: generated replies that are no answer set):", "",
                  "| model | reading | questions | S-Verify | S-Choose | S-Query | Avg | unparsed |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in snap["qa"]:
            unparsed = "-" if row["unparsed"] is None else f"{row['unparsed']:.2f}"
            lines.append(f"| {row['model']} | {row['reading']} | {row['questions']} | "
                         + " | ".join(_cell(row[c]) for c in QA_COLUMNS) + f" | {unparsed} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _block(run: str) -> re.Pattern:
    return re.compile(rf"(<!-- figures:{re.escape(run)} -->\n)(.*?)(<!-- /figures:{re.escape(run)} -->)", re.DOTALL)


def snapshots() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(SNAPSHOTS.glob("*.json"))}


def write(readme: Path = README) -> list[str]:
    """Render every snapshot into its README block; return the runs whose block changed."""
    text = readme.read_text(encoding="utf-8")
    changed = []
    for run, snap in snapshots().items():
        pattern = _block(run)
        if not pattern.search(text):
            raise SystemExit(f"{readme}: no block <!-- figures:{run} --> ... <!-- /figures:{run} -->")
        new = pattern.sub(lambda m: m.group(1) + render(snap) + m.group(3), text)
        if new != text:
            changed.append(run)
            text = new
    if changed:
        write_text_atomic(readme, text)
    return changed


def check(readme: Path = README) -> list[str]:
    """The runs whose README block differs from what their snapshot renders (empty: all agree)."""
    text = readme.read_text(encoding="utf-8")
    bad = []
    for run, snap in snapshots().items():
        match = _block(run).search(text)
        if match is None or match.group(2) != render(snap):
            bad.append(run)
    return bad


def compare(run: Path) -> int:
    """Print how the run at ``run`` compares with its committed snapshot; 0 if its hashes all match."""
    committed = snapshots().get(run.name)
    if committed is None:
        raise SystemExit(f"no snapshot docs/figures/{run.name}.json to compare with")
    fresh = snapshot(run)
    print(f"committed: {committed['made_with']}\nthis run:  {fresh['made_with']}")
    same = True
    for name, digest in committed["sha256"].items():
        now = fresh["sha256"].get(name)
        same &= now == digest
        print(f"{'same' if now == digest else 'DIFFERS'}  {name}")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("snapshot", help="write docs/figures/<run>.json from a finished run, then the README block")
    p.add_argument("run", type=Path, help="the run folder, e.g. results/demo")
    sub.add_parser("write", help="render every snapshot into its README block")
    sub.add_parser("check", help="exit 1 when a README block differs from its snapshot")
    p = sub.add_parser("compare", help="compare a run's hashes with its committed snapshot")
    p.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        snap = snapshot(args.run)
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        write_text_atomic(SNAPSHOTS / f"{snap['run']}.json", json.dumps(snap, indent=1) + "\n")
        print(f"wrote docs/figures/{snap['run']}.json; README blocks changed: {write() or 'none'}")
        return 0
    if args.command == "write":
        print(f"README blocks changed: {write() or 'none'}")
        return 0
    if args.command == "check":
        bad = check()
        if bad:
            print(f"README blocks that differ from their snapshot: {', '.join(bad)} "
                  "(run python scripts/readme_figures.py write)", file=sys.stderr)
            return 1
        print("every README figure block matches its snapshot")
        return 0
    return compare(args.run)


if __name__ == "__main__":
    sys.exit(main())
