"""`ecglm prepare` on the real PTB-XL sample and on broken copies of it.

Real records are read in place from ../shared (symlinked into tmp folders where a test needs a
modified database or a few corrupted records; only the corrupted records are copied, to tmp).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import wfdb

from ecglm.cli import main
from ecglm.core.leads import LEADS, canonical_lead
from ecglm.data.prepare import NPY_HEADER_BYTES, npy_header, prepare, read_table_metadata
from ecglm.data.wfdb_records import RecordError, read_record

MiB = 2**20


# ----------------------------------------------------------------------------- helpers


def rdsamp_uv(base: Path) -> np.ndarray:
    """wfdb.rdsamp's physical signal x 1000 as int, [12, T] in LEADS order (matched by lead NAME)."""
    signal, fields = wfdb.rdsamp(str(base))  # [T, 12] float mV
    names = [canonical_lead(n) for n in fields["sig_name"]]
    uv = np.round(signal * 1000).astype(np.int64)
    return np.stack([uv[:, names.index(lead)] for lead in LEADS])


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_database(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def sample_rows(sample: Path, ids: list[int]) -> list[dict[str, str]]:
    by_id = {int(r["ecg_id"]): r for r in read_csv_rows(sample / "ptbxl_database.csv")}
    return [dict(by_id[i]) for i in ids]


def outputs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()} if out.exists() else set()


# ----------------------------------------------------------------------------- the real sample


@pytest.fixture(scope="module")
def prepared_100(ptbxl_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep100")
    prepare(ptbxl_sample, out, fs=100, workers=2, chunk_size=16, progress=False)  # many chunks, 2 processes
    return out


@pytest.fixture(scope="module")
def prepared_500(ptbxl_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep500")
    assert main(["prepare", "--source", str(ptbxl_sample), "--out", str(out), "--fs", "500",
                 "--workers", "2", "--chunk-size", "8", "--no-progress"]) == 0  # fmt: skip
    return out


def test_sample_100_equals_wfdb(prepared_100, ptbxl_sample):
    signals = np.load(prepared_100 / "signals_100.npy", mmap_mode="r")
    assert isinstance(signals, np.memmap)
    assert signals.shape == (300, 12, 1000) and signals.dtype == np.int16
    table = pl.read_parquet(prepared_100 / "records.parquet")
    assert table["ecg_id"].to_list() == list(range(1, 301))
    for i, (ecg_id, rel) in enumerate(table.select("ecg_id", "filename_lr").iter_rows()):
        expected = rdsamp_uv(ptbxl_sample / rel)
        np.testing.assert_array_equal(signals[i], expected, err_msg=f"ecg_id {ecg_id}")
    assert (prepared_100 / "bad_records.csv").read_text() == "ecg_id,path,reason\n"
    assert (prepared_100 / "absent_records.csv").read_text() == "ecg_id,path\n"


def test_chunks_through_pipes_equal_chunks_through_shared_memory(ptbxl_sample, prepared_100, tmp_path, monkeypatch, caplog):
    """Without room in /dev/shm the workers send their chunks through pipes: same outputs."""
    import ecglm.data.prepare

    monkeypatch.setattr(ecglm.data.prepare, "_shared_memory_room", lambda: 0)
    out = tmp_path / "pipes"
    with caplog.at_level("INFO", logger="ecglm.data.prepare"):
        prepare(ptbxl_sample, out, fs=100, workers=2, chunk_size=7, progress=False)
    assert "chunks travel through pipes" in caplog.text
    np.testing.assert_array_equal(np.load(out / "signals_100.npy"), np.load(prepared_100 / "signals_100.npy"))
    assert pl.read_parquet(out / "records.parquet").equals(pl.read_parquet(prepared_100 / "records.parquet"))


def test_lead_order_follows_leads_not_the_header(ptbxl_sample, prepared_100):
    header = wfdb.rdheader(str(ptbxl_sample / "records100/00000/00001_lr"))
    assert header.sig_name[3:6] == ["AVR", "AVL", "AVF"]  # PTB-XL's spelling
    signal, _ = wfdb.rdsamp(str(ptbxl_sample / "records100/00000/00001_lr"))
    signals = np.load(prepared_100 / "signals_100.npy", mmap_mode="r")
    for lead, column in (("I", 0), ("aVR", 3), ("aVF", 5), ("V1", 6), ("V6", 11)):
        np.testing.assert_array_equal(signals[0, LEADS.index(lead)], np.round(signal[:, column] * 1000).astype(int))


def test_sample_500_equals_wfdb_and_lists_absent(prepared_500, ptbxl_sample):
    signals = np.load(prepared_500 / "signals_500.npy", mmap_mode="r")
    assert signals.shape == (100, 12, 5000) and signals.dtype == np.int16
    table = pl.read_parquet(prepared_500 / "records.parquet")
    assert table["ecg_id"].to_list() == list(range(1, 101))
    for i, rel in enumerate(table["filename_hr"]):
        np.testing.assert_array_equal(signals[i], rdsamp_uv(ptbxl_sample / rel), err_msg=rel)
    absent = read_csv_rows(prepared_500 / "absent_records.csv")
    assert [int(r["ecg_id"]) for r in absent] == list(range(101, 301))
    assert absent[0]["path"] == "records500/00000/00101_hr"
    assert (prepared_500 / "bad_records.csv").read_text() == "ecg_id,path,reason\n"
    assert read_table_metadata(prepared_500 / "records.parquet")["shape"] == [100, 12, 5000]


def test_records_table_types_and_values(prepared_100):
    table = pl.read_parquet(prepared_100 / "records.parquet")
    expected_types = {
        "ecg_id": pl.Int32, "patient_id": pl.Int32, "age": pl.Int16, "age_over_89": pl.Boolean,
        "sex": pl.String, "height": pl.Float32, "weight": pl.Float32, "nurse": pl.Int16, "site": pl.Int16,
        "device": pl.String, "recording_date": pl.Datetime("us"), "report": pl.String,
        "scp_codes": pl.List(pl.Struct({"code": pl.String, "likelihood": pl.Float32})),
        "heart_axis": pl.String, "infarction_stadium1": pl.String, "infarction_stadium2": pl.String,
        "validated_by": pl.Int16, "second_opinion": pl.Boolean, "initial_autogenerated_report": pl.Boolean,
        "validated_by_human": pl.Boolean, "baseline_drift": pl.String, "static_noise": pl.String,
        "burst_noise": pl.String, "electrodes_problems": pl.String, "extra_beats": pl.String,
        "pacemaker": pl.String, "strat_fold": pl.Int8, "split": pl.String, "filename_lr": pl.String,
        "filename_hr": pl.String, "diagnostic": pl.List(pl.String), "diagnostic_subclass": pl.List(pl.String),
        "diagnostic_superclass": pl.List(pl.String), "rhythm": pl.List(pl.String), "form": pl.List(pl.String),
    }  # fmt: skip
    assert dict(table.schema) == expected_types
    first = table.row(0, named=True)
    assert first["patient_id"] == 15709 and first["age"] == 56 and first["age_over_89"] is False
    assert first["sex"] == "female" and first["height"] is None and first["weight"] == 63.0
    assert first["nurse"] == 2 and first["site"] == 0 and first["device"] == "CS-12   E"
    assert first["recording_date"] == datetime(1984, 11, 9, 9, 17, 34)
    assert first["report"] == "sinusrhythmus periphere niederspannung"
    assert first["scp_codes"] == [
        {"code": "NORM", "likelihood": 100.0}, {"code": "LVOLT", "likelihood": 0.0}, {"code": "SR", "likelihood": 0.0}
    ]
    assert first["static_noise"] == " , I-V1,  "  # as in the file
    assert first["validated_by_human"] is True and first["second_opinion"] is False
    assert first["strat_fold"] == 3 and first["split"] == "train"
    assert table.row(1, named=True)["sex"] == "male"  # ecg_id 2: sex 0
    splits = dict(zip(table["strat_fold"].to_list(), table["split"].to_list()))
    assert splits == {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}
    by_id = {r["ecg_id"]: r for r in table.select("ecg_id", "age", "age_over_89", "height").iter_rows(named=True)}
    assert by_id[108]["age"] is None and by_id[108]["age_over_89"] is None  # empty age in the real file
    assert by_id[279]["age"] == 91 and by_id[279]["age_over_89"] is True  # a plain age > 89 in the real file
    assert by_id[101]["height"] == 172.0
    assert table["pacemaker"].drop_nulls().to_list() == ["ja, pacemaker"] * 3
    meta = read_table_metadata(prepared_100 / "records.parquet")
    assert meta["fs"] == 100 and meta["signals"] == "signals_100.npy" and meta["leads"] == list(LEADS)


def test_ages_heights_weights_and_bad_cells(ptbxl_sample, tmp_path):
    """Ages empty, 89-94 plain, 300 coded; missing height/weight/sex; impossible ages and sexes."""
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(ptbxl_sample / "records100", src / "records100")
    os.symlink(ptbxl_sample / "scp_statements.csv", src / "scp_statements.csv")
    rows = sample_rows(ptbxl_sample, list(range(1, 11)))
    edits = {
        1: {"age": "", "height": "", "weight": ""},
        2: {"age": "89.0", "height": "172.0"},
        3: {"age": "90.0"},
        4: {"age": "94.0"},
        5: {"age": "300.0"},
        6: {"age": "300"},
        7: {"age": "56.0", "sex": ""},
        8: {"age": "17.0", "weight": "63.5"},
        9: {"age": "250.0"},
        10: {"sex": "2"},
    }
    for row in rows:
        row.update(edits[int(row["ecg_id"])])
    write_database(src / "ptbxl_database.csv", rows)
    out = tmp_path / "out"
    prepare(src, out, fs=100, workers=1, skip_bad_records=True, progress=False)
    table = pl.read_parquet(out / "records.parquet")
    got = {r["ecg_id"]: r for r in table.iter_rows(named=True)}
    assert sorted(got) == list(range(1, 9))
    assert [(got[i]["age"], got[i]["age_over_89"]) for i in range(1, 9)] == [
        (None, None), (89, False), (90, True), (94, True), (None, True), (None, True), (56, False), (17, False)
    ]
    assert (got[1]["height"], got[1]["weight"]) == (None, None)
    assert (got[2]["height"], got[8]["weight"]) == (172.0, 63.5)
    assert got[7]["sex"] is None and got[8]["sex"] == "male"  # ecg_id 8: sex 0
    bad = {int(r["ecg_id"]): r["reason"] for r in read_csv_rows(out / "bad_records.csv")}
    assert set(bad) == {9, 10}
    assert "age '250.0'" in bad[9] and "300" in bad[9]
    assert "sex '2' is out of range" in bad[10]
    signals = np.load(out / "signals_100.npy", mmap_mode="r")
    assert signals.shape == (8, 12, 1000)
    np.testing.assert_array_equal(signals[7], rdsamp_uv(ptbxl_sample / "records100/00000/00008_lr"))


# ----------------------------------------------------------------------------- bad input


def _copy(sample: Path, src: Path, ecg_id: int, ext: str) -> Path:
    rel = f"records100/00000/{ecg_id:05d}_lr{ext}"
    target = src / rel
    target.unlink()  # a symlink to the real file: replace it by a copy before changing it
    shutil.copyfile(sample / rel, target)
    return target


def _truncate(sample, src, i):
    dat = _copy(sample, src, i, ".dat")
    dat.write_bytes(dat.read_bytes()[:10_000])


def _eleven_leads(sample, src, i):
    hea = _copy(sample, src, i, ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join([lines[0].replace(" 12 ", " 11 ", 1)] + lines[1:12]) + "\n")


def _nan_samples(sample, src, i):
    dat = _copy(sample, src, i, ".dat")
    data = np.fromfile(dat, dtype="<i2").reshape(1000, 12)
    data[100:105, 7] = -32768  # lead V2
    data.tofile(dat)


def _edit_header(old: str, new: str, line: int):
    def edit(sample, src, i):
        hea = _copy(sample, src, i, ".hea")
        lines = hea.read_text().splitlines()
        lines[line] = lines[line].replace(old, new)
        hea.write_text("\n".join(lines) + "\n")

    return edit


def _garbage_header(sample, src, i):
    _copy(sample, src, i, ".hea").write_text("garbage\n")


def _missing_dat(sample, src, i):
    (src / f"records100/00000/{i:05d}_lr.dat").unlink()


def _bad_scp_codes(sample, src, i):
    rows = read_csv_rows(src / "ptbxl_database.csv")
    for row in rows:
        if int(row["ecg_id"]) == i:
            row["scp_codes"] = "{'NORM': 100.0, 'SR': }"
    write_database(src / "ptbxl_database.csv", rows)


# ecg_id -> (how it is broken, a regex its reason must match)
BROKEN = {
    2: (_truncate, r"truncated signal file 00002_lr\.dat: 10000 bytes, expected 24000"),
    3: (_eleven_leads, r"expected 12 signals, header has 11"),
    4: (_nan_samples, r"5 missing samples \(WFDB value -32768, NaN in wfdb\.rdsamp\) in lead\(s\) V2"),
    5: (_bad_scp_codes, r"scp_codes .*is not a Python dict literal"),
    6: (_edit_header(" V6", " V7", 12), r"unknown lead name 'V7'"),
    7: (_edit_header(" 12 100 1000", " 12 500 1000", 0), r"sampling rate is 500 Hz, expected 100 Hz"),
    8: (_edit_header(" 12 100 1000", " 12 100 999", 0), r"length is 999 samples, expected 1000"),
    9: (_missing_dat, r"missing signal file 00009_lr\.dat"),
    10: (_garbage_header, r"header record line 'garbage' lacks the number of signals"),
}
N_SMALL = 14  # ids 1-14: 9 broken, 1 absent (11), 4 good


def small_tree(sample: Path, root: Path, broken: list[int]) -> Path:
    """ids 1-14 of the sample, record files symlinked in place; ``broken`` ids damaged; id 11 absent."""
    src = root / "src"
    folder = src / "records100/00000"
    folder.mkdir(parents=True)
    os.symlink(sample / "scp_statements.csv", src / "scp_statements.csv")
    write_database(src / "ptbxl_database.csv", sample_rows(sample, list(range(1, N_SMALL + 1))))
    for i in range(1, N_SMALL + 1):
        if i == 11:
            continue  # absent: neither .hea nor .dat
        for ext in (".hea", ".dat"):
            os.symlink(sample / f"records100/00000/{i:05d}_lr{ext}", folder / f"{i:05d}_lr{ext}")
    for i in broken:
        BROKEN[i][0](sample, src, i)
    return src


@pytest.mark.parametrize("ecg_id", sorted(BROKEN))
def test_bad_record_stops_with_its_id_and_reason(ptbxl_sample, tmp_path, capsys, ecg_id):
    src = small_tree(ptbxl_sample, tmp_path, [ecg_id])
    out = tmp_path / "out"
    code = main(["prepare", "--source", str(src), "--out", str(out), "--workers", "1", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"ecglm prepare: error: ecg_id {ecg_id} ({src}/records100/00000/{ecg_id:05d}_lr): ")
    assert re.search(BROKEN[ecg_id][1], err), err
    assert "--skip-bad-records" in err
    assert outputs(out) == set(), "a failed prepare must leave no output and no temporary file"


def test_bad_record_from_a_worker_process_stops_the_stage(ptbxl_sample, tmp_path, capsys):
    src = small_tree(ptbxl_sample, tmp_path, [8])
    out = tmp_path / "out"
    code = main(["prepare", "--source", str(src), "--out", str(out), "--workers", "2", "--chunk-size", "2", "--no-progress"])
    assert code == 1
    assert "ecg_id 8 " in capsys.readouterr().err
    assert outputs(out) == set()


def test_skip_bad_records_lists_each_and_keeps_rows_aligned(ptbxl_sample, tmp_path):
    src = small_tree(ptbxl_sample, tmp_path, sorted(BROKEN))
    out = tmp_path / "out"
    code = main(["prepare", "--source", str(src), "--out", str(out), "--workers", "2", "--chunk-size", "3",
                 "--skip-bad-records", "--no-progress"])  # fmt: skip
    assert code == 0
    bad = read_csv_rows(out / "bad_records.csv")
    assert [int(r["ecg_id"]) for r in bad] == sorted(BROKEN)
    for row in bad:
        i = int(row["ecg_id"])
        assert row["path"] == f"records100/00000/{i:05d}_lr"
        assert re.search(BROKEN[i][1], row["reason"]), row
    assert read_csv_rows(out / "absent_records.csv") == [{"ecg_id": "11", "path": "records100/00000/00011_lr"}]
    good = [1, 12, 13, 14]
    table = pl.read_parquet(out / "records.parquet")
    assert table["ecg_id"].to_list() == good
    signals = np.load(out / "signals_100.npy", mmap_mode="r")
    assert signals.shape == (len(good), 12, 1000)
    for row, i in enumerate(good):
        np.testing.assert_array_equal(signals[row], rdsamp_uv(ptbxl_sample / f"records100/00000/{i:05d}_lr"))
    assert outputs(out) == {"records.parquet", "signals_100.npy", "bad_records.csv", "absent_records.csv"}


def test_nothing_to_prepare_is_an_error(ptbxl_sample, tmp_path):
    src = small_tree(ptbxl_sample, tmp_path, [])
    with pytest.raises(Exception, match=r"no record could be prepared at 500 Hz \(14 absent, 0 bad\)"):
        prepare(src, tmp_path / "out", fs=500, workers=1, progress=False)


def test_database_errors_name_the_file(ptbxl_sample, tmp_path, capsys):
    src = small_tree(ptbxl_sample, tmp_path, [])
    rows = read_csv_rows(src / "ptbxl_database.csv")
    write_database(src / "ptbxl_database.csv", rows + [rows[0]])
    assert main(["prepare", "--source", str(src), "--out", str(tmp_path / "o"), "--workers", "1"]) == 1
    assert "ptbxl_database.csv: ecg_id 1 is listed twice" in capsys.readouterr().err
    write_database(src / "ptbxl_database.csv", [{k: v for k, v in r.items() if k != "strat_fold"} for r in rows])
    assert main(["prepare", "--source", str(src), "--out", str(tmp_path / "o"), "--workers", "1"]) == 1
    assert "ptbxl_database.csv: missing column(s) strat_fold" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the reader and the .npy header


def test_read_record_converts_other_gains_exactly_or_refuses(ptbxl_sample, tmp_path):
    base = ptbxl_sample / "records100/00000/00001_lr"
    reference = read_record(base, 100)  # [12, 1000]
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copyfile(f"{base}.dat", folder / "00001_lr.dat")
    text = Path(f"{base}.hea").read_text()
    # a header in uV with gain 1 and baseline 0 describes the same signal
    (folder / "00001_lr.hea").write_text(text.replace("1000.0(0)/mV", "1.0(0)/uV"))
    np.testing.assert_array_equal(read_record(folder / "00001_lr", 100), reference)
    # baseline 10: every value is 10 uV lower, like wfdb.rdsamp's (adc - baseline) / gain
    (folder / "00001_lr.hea").write_text(text.replace("1000.0(0)/mV", "1000.0(10)/mV"))
    np.testing.assert_array_equal(read_record(folder / "00001_lr", 100), reference - 10)
    signal, _ = wfdb.rdsamp(str(folder / "00001_lr"))
    np.testing.assert_array_equal(read_record(folder / "00001_lr", 100)[0], np.round(signal[:, 0] * 1000).astype(int))
    # gain 3000/mV: one ADC step is 1/3 uV, not a whole number of microvolts
    (folder / "00001_lr.hea").write_text(text.replace("1000.0(0)/mV", "3000.0(0)/mV"))
    with pytest.raises(RecordError, match="would not be exact"):
        read_record(folder / "00001_lr", 100)


def test_npy_header_has_a_fixed_length_and_is_valid(tmp_path):
    for shape in [(0, 12, 1000), (7, 12, 5000), (21_799, 12, 5000), (10**12, 12, 5000)]:
        header = npy_header(shape)
        assert len(header) == NPY_HEADER_BYTES and len(header) % 64 == 0
        path = tmp_path / "a.npy"
        path.write_bytes(header + np.arange(np.prod(shape[1:]) * min(shape[0], 2), dtype="<i2").tobytes())
        if shape[0] <= 2:
            arr = np.load(path, mmap_mode="r")
            assert arr.shape == shape and arr.dtype == np.int16
        with open(path, "rb") as fh:
            np.lib.format.read_magic(fh)
            assert np.lib.format.read_array_header_1_0(fh) == (shape, False, np.dtype("<i2"))


def test_cli_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = capsys.readouterr().out
    for option in ("--source", "--out", "--fs", "--workers", "--chunk-size", "--skip-bad-records", "--no-progress"):
        assert option in text


# ----------------------------------------------------------------------------- memory


def _bench_module(repo_root: Path):
    spec = importlib.util.spec_from_file_location("bench_prepare", repo_root / "bench" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peak_rss(args: list[str]) -> int:
    """Peak RSS (bytes) of `python -m ecglm <args>`: the largest of the process and its workers."""
    proc = subprocess.Popen([sys.executable, "-m", "ecglm", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err.decode()
    return usage.ru_maxrss * 1024  # Linux: KiB


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_the_number_of_records(repo_root, tmp_path):
    """200 vs 2,000 synthetic 500 Hz records: the extra 1,800 records hold 206 MiB of signals.

    If the parent kept the signals (or results piled up), the 2,000-record run would need about
    that much more memory. The stated margin, 16 MiB, allows for the metadata table (a few KiB per
    record; about 4 MiB measured for these 1,800 records) and allocator noise.
    """
    bench = _bench_module(repo_root)
    big = bench.write_synthetic_tree(tmp_path / "big", 2000, fs=500, progress=False)
    small = tmp_path / "small"
    small.mkdir()
    rows = read_csv_rows(big / "ptbxl_database.csv")
    write_database(small / "ptbxl_database.csv", rows[:200])
    os.symlink(big / "scp_statements.csv", small / "scp_statements.csv")
    os.symlink(big / "records500", small / "records500")
    peaks = {}
    for name, src in (("small", small), ("big", big)):
        out = tmp_path / f"out-{name}"
        peaks[name] = _peak_rss(["prepare", "--source", str(src), "--out", str(out), "--fs", "500", "--no-progress"])
        n = 200 if name == "small" else 2000
        assert np.load(out / "signals_500.npy", mmap_mode="r").shape == (n, 12, 5000)
    extra_signals = 1800 * 12 * 5000 * 2
    growth = peaks["big"] - peaks["small"]
    assert growth < 16 * MiB, (
        f"peak RSS grew by {growth / MiB:.1f} MiB from 200 to 2,000 records "
        f"({peaks['small'] / MiB:.0f} -> {peaks['big'] / MiB:.0f} MiB; their signals are {extra_signals / MiB:.0f} MiB)"
    )
