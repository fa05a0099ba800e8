"""PTB-XL labels: scp_codes parsing, scp_statements.csv, and the standard aggregation on real records.

The expected label lists below were looked up BY HAND in ../shared/ptbxl-sample/ptbxl_database.csv
(scp_codes) and scp_statements.csv (diagnostic / form / rhythm flags, diagnostic_class,
diagnostic_subclass), and are written out literally; they are not recomputed with ecglm.data.labels.
"""

from __future__ import annotations

import polars as pl
import pytest

from ecglm.core.errors import StageError
from ecglm.data.labels import (
    LABEL_COLUMNS,
    ScpCodesError,
    aggregate_labels,
    codes_of_task,
    load_scp_statements,
    parse_scp_codes,
)
from ecglm.data.prepare import prepare

# ecg_id: (diagnostic, diagnostic_subclass, diagnostic_superclass, rhythm, form)
EXPECTED = {
    # {'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}: likelihood 0.0 still counts (LVOLT, SR)
    1: (["NORM"], ["NORM"], ["NORM"], ["SR"], ["LVOLT"]),
    # {'IMI': 35.0, 'ABQRS': 0.0, 'SR': 0.0}
    8: (["IMI"], ["IMI"], ["MI"], ["SR"], ["ABQRS"]),
    # {'AFLT': 100.0, 'ABQRS': 0.0, 'AFIB': 0.0}: no diagnostic code, so no superclass
    17: ([], [], [], ["AFIB", "AFLT"], ["ABQRS"]),
    # {'NST_': 100.0, 'DIG': 100.0, 'SR': 0.0}: NST_ and DIG are diagnostic AND form
    26: (["DIG", "NST_"], ["NST_", "STTC"], ["STTC"], ["SR"], ["DIG", "NST_"]),
    # {'IMI': 15.0, 'LNGQT': 100.0, 'NST_': 100.0, 'DIG': 100.0, 'ABQRS': 0.0, 'SR': 0.0}
    39: (["DIG", "IMI", "LNGQT", "NST_"], ["IMI", "NST_", "STTC"], ["MI", "STTC"], ["SR"], ["ABQRS", "DIG", "LNGQT", "NST_"]),
    # {'IRBBB': 100.0, 'RAO/RAE': 50.0, 'RVH': 35.0, 'SR': 0.0}
    45: (["IRBBB", "RAO/RAE", "RVH"], ["IRBBB", "RAO/RAE", "RVH"], ["CD", "HYP"], ["SR"], []),
    # {'ISCAL': 50.0, '1AVB': 100.0, 'SR': 0.0}: 1AVB -> subclass _AVB
    102: (["1AVB", "ISCAL"], ["ISCA", "_AVB"], ["CD", "STTC"], ["SR"], []),
    # {'PACE': 100.0}: a rhythm only, no superclass
    143: ([], [], [], ["PACE"], []),
    # {'LMI': 50.0, 'ISCIL': 100.0, 'AFIB': 0.0}
    152: (["ISCIL", "LMI"], ["ISCI", "LMI"], ["MI", "STTC"], ["AFIB"], []),
    # {'ASMI': 50.0, 'LAFB': 100.0, 'LVH': 50.0, 'ISC_': 100.0, 'SR': 0.0}: four superclasses
    162: (["ASMI", "ISC_", "LAFB", "LVH"], ["AMI", "ISC_", "LAFB/LPFB", "LVH"], ["CD", "HYP", "MI", "STTC"], ["SR"], []),
    # {'ASMI': 50.0, 'IMI': 100.0, 'PAC': 0.0, 'LOWT': 0.0, 'STD_': 0.0, 'SR': 0.0}
    257: (["ASMI", "IMI"], ["AMI", "IMI"], ["MI"], ["SR"], ["LOWT", "PAC", "STD_"]),
    # {'NDT': 100.0, 'EL': 50.0, 'NT_': 0.0, 'SR': 0.0}
    261: (["EL", "NDT"], ["STTC"], ["STTC"], ["SR"], ["NDT", "NT_"]),
    # {'ALMI': 100.0, 'IMI': 80.0, 'LAFB': 100.0, 'PVC': 100.0, 'ANEUR': 50.0, 'QWAVE': 0.0, 'INVT': 0.0, 'SR': 0.0}
    266: (["ALMI", "ANEUR", "IMI", "LAFB"], ["AMI", "IMI", "LAFB/LPFB", "STTC"], ["CD", "MI", "STTC"], ["SR"], ["INVT", "PVC", "QWAVE"]),
    # {'ASMI': 100.0, 'LVH': 100.0, 'ISC_': 100.0, 'LAO/LAE': 50.0, 'VCLVH': 0.0, 'INVT': 0.0, 'STD_': 0.0, 'SR': 0.0}
    274: (["ASMI", "ISC_", "LAO/LAE", "LVH"], ["AMI", "ISC_", "LAO/LAE", "LVH"], ["HYP", "MI", "STTC"], ["SR"], ["INVT", "STD_", "VCLVH"]),
    # {'ASMI': 100.0, 'ILBBB': 100.0, 'LVH': 50.0, 'ISC_': 100.0, 'PVC': 100.0, 'AFIB': 0.0}
    282: (["ASMI", "ILBBB", "ISC_", "LVH"], ["AMI", "ILBBB", "ISC_", "LVH"], ["CD", "HYP", "MI", "STTC"], ["AFIB"], ["PVC"]),
    # {'LVH': 100.0, 'ISC_': 100.0, 'DIG': 100.0, 'VCLVH': 0.0, 'STD_': 0.0, 'SBRAD': 0.0, 'SARRH': 0.0}: two rhythms
    284: (["DIG", "ISC_", "LVH"], ["ISC_", "LVH", "STTC"], ["HYP", "STTC"], ["SARRH", "SBRAD"], ["DIG", "STD_", "VCLVH"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def records(ptbxl_sample, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("labels")
    prepare(ptbxl_sample, out, fs=100, workers=1, progress=False)
    return pl.read_parquet(out / "records.parquet")


@pytest.mark.parametrize("ecg_id", sorted(EXPECTED))
def test_labels_of_real_records(records, ecg_id):
    row = records.filter(pl.col("ecg_id") == ecg_id).row(0, named=True)
    got = tuple(row[c] for c in LABEL_COLUMNS)
    assert got == EXPECTED[ecg_id], f"ecg_id {ecg_id}"


def test_label_columns_are_sorted_string_lists(records):
    for column in LABEL_COLUMNS:
        assert records.schema[column] == pl.List(pl.String)
        for labels in records[column].to_list():
            assert labels == sorted(set(labels))
    supers = set(records["diagnostic_superclass"].explode().drop_nulls().to_list())
    assert supers == {"NORM", "MI", "STTC", "CD", "HYP"}


def test_scp_statements_real_file(ptbxl_sample):
    st = load_scp_statements(ptbxl_sample / "scp_statements.csv")
    assert len(st) == 71
    assert sum(s.diagnostic for s in st.values()) == 44
    assert sum(s.form for s in st.values()) == 19
    assert sum(s.rhythm for s in st.values()) == 12
    # codes that a numeric or NA-guessing reader would mangle, read as str
    assert {"1AVB", "LAO/LAE", "PRC(S)", "NST_"} <= set(st)
    assert st["1AVB"].diagnostic_class == "CD" and st["1AVB"].diagnostic_subclass == "_AVB"
    assert st["PRC(S)"].form and not st["PRC(S)"].diagnostic
    assert all(st[c].diagnostic and st[c].form for c in ("NDT", "NST_", "DIG", "LNGQT"))
    assert codes_of_task(st, "diagnostic_superclass") == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert codes_of_task(st, "rhythm") == sorted(
        ["SR", "AFIB", "STACH", "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT", "SVTAC", "PSVT", "TRIGU"]
    )


def test_aggregation_counts_zero_likelihood_and_ignores_unknown_codes(ptbxl_sample):
    st = load_scp_statements(ptbxl_sample / "scp_statements.csv")
    labels = aggregate_labels(parse_scp_codes("{'MI_NEW': 100.0, 'PRC(S)': 0.0, 'LAO/LAE': 0.0}"), st)
    assert labels == {
        "diagnostic": ["LAO/LAE"],
        "diagnostic_subclass": ["LAO/LAE"],
        "diagnostic_superclass": ["HYP"],
        "rhythm": [],
        "form": ["PRC(S)"],
    }


def test_parse_scp_codes_accepts_ptbxl_dicts():
    assert parse_scp_codes("{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}") == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert parse_scp_codes("{'AFIB': 100}") == {"AFIB": 100.0}
    assert parse_scp_codes("{}") == {}


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        (None, "empty"),
        ("{'NORM': 100.0, 'SR': }", "not a Python dict literal"),
        ("['NORM', 'SR']", "list, not a dict"),
        ("{'NORM': '100'}", "not a number"),
        ("{'NORM': True}", "not a number"),
        ("{'NORM': None}", "not a number"),
        ("{1: 100.0}", "not a code name"),
        ("{'NORM': 1e999}", "not a number"),
        ("__import__('os').system('echo pwned')", "not a Python dict literal"),
        ("{'NORM': 100.0", "not a Python dict literal"),
    ],
)
def test_parse_scp_codes_rejects_malformed(text, why):
    with pytest.raises(ScpCodesError, match=why):
        parse_scp_codes(text)


def test_scp_statements_errors(tmp_path):
    missing_col = tmp_path / "a.csv"
    missing_col.write_text(",description,diagnostic,form\nNORM,normal ECG,1.0,\n")
    with pytest.raises(StageError, match="missing column"):
        load_scp_statements(missing_col)
    header = ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n"
    bad_flag = tmp_path / "b.csv"
    bad_flag.write_text(header + "NORM,normal ECG,yes,,,NORM,NORM\n")
    with pytest.raises(StageError, match=r"NORM: column diagnostic holds 'yes'"):
        load_scp_statements(bad_flag)
    twice = tmp_path / "c.csv"
    twice.write_text(header + "NORM,normal ECG,1.0,,,NORM,NORM\nNORM,normal ECG,1.0,,,NORM,NORM\n")
    with pytest.raises(StageError, match="listed twice"):
        load_scp_statements(twice)
    no_class = tmp_path / "d.csv"
    no_class.write_text(header + "IMI,inferior MI,1.0,,,,\n")
    with pytest.raises(StageError, match="IMI lacks its diagnostic_class"):
        load_scp_statements(no_class)
    with pytest.raises(StageError, match="missing"):
        load_scp_statements(tmp_path / "absent.csv")
