"""`ecglm download` / `ecglm verify` against a real HTTP server on 127.0.0.1 serving real PTB-XL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mirror import MirrorServer, build_ptbxl_mirror, build_tree, build_zip, overlapping_connections

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.data.download import download_project, select_files, verify_project
from ecglm.data.physionet import CHECKSUMS, parse_checksums, record_path, sha256_file

PREFIX = "/ptb-xl/1.0.3/"
FAST = ["--retry-delay", "0.01", "--no-progress"]


def run(*args: str) -> int:
    return cli.main([str(a) for a in args])


def sums_of(project_dir: Path) -> dict[str, str]:
    return parse_checksums((project_dir / CHECKSUMS).read_text())


def assert_tree(dest: Path, expected: dict[str, str]) -> None:
    """Every expected file is present with its hash, and no temporary file is left behind."""
    for rel, digest in expected.items():
        assert sha256_file(dest / rel) == digest, rel
    leftovers = [p for p in dest.rglob("*") if p.name.endswith((".part", ".tmp", ".fresh"))]
    assert leftovers == []


@pytest.fixture
def mirror(tmp_path, ptbxl_sample):
    """A small mirror: the tables and records 1-20 at 100 and 500 Hz."""
    root = tmp_path / "mirror"
    project = build_ptbxl_mirror(root, ptbxl_sample, ids=range(1, 21), rates=(100, 500))
    return root, project


# ------------------------------------------------------------------------------------------ selection
def test_select_files_by_rate_and_prefix():
    digest = "0" * 64
    sums = {rel: digest for rel in ["RECORDS", "LICENSE.txt", "ptbxl_database.csv",
                                    "records100/00000/00001_lr.dat", "records500/00000/00001_hr.dat"]}
    assert select_files(sums, "ptbxl") == ["LICENSE.txt", "RECORDS", "ptbxl_database.csv",
                                           "records100/00000/00001_lr.dat"]
    assert "records100/00000/00001_lr.dat" not in select_files(sums, "ptbxl", rates=[500])
    assert len(select_files(sums, "ptbxl", rates=[100, 500])) == 5
    with pytest.raises(StageError, match="features/"):
        select_files(sums, "ptbxl_plus")  # this tree has no features/: a wrong tree, not an empty pick


# ---------------------------------------------------------------------------------------- files mode
def test_happy_path_cli_parallel_then_rerun_without_requests(tmp_path, ptbxl_sample):
    root = tmp_path / "mirror"
    project = build_ptbxl_mirror(root, ptbxl_sample, ids=range(1, 101), rates=(100, 500))
    expected = sums_of(project)
    dest, manifest = tmp_path / "dest", tmp_path / "manifest.json"
    with MirrorServer(root) as server:
        server.faults.delay_s = 0.005  # a server with some latency, as PhysioNet has
        args = ["download", "ptbxl", "--base-url", server.base_url, "--dest", dest, "--rates", "100", "500",
                "--connections", "4", "--manifest", manifest, *FAST]
        assert run(*args) == 0
        first = server.requests
        server.clear_log()
        assert run(*args) == 0
        second = server.requests

    assert len(expected) == 404
    assert_tree(dest, expected)
    assert (dest / CHECKSUMS).read_text() == (project / CHECKSUMS).read_text()
    data = json.loads(manifest.read_text())
    assert data["n_files"] == 404 and data["files"] == expected
    assert (data["project"], data["slug"], data["version"], data["via"]) == ("ptbxl", "ptb-xl", "1.0.3", "files")
    assert data["rates"] == [100, 500]
    assert sorted(r.path for r in first) == sorted([PREFIX + CHECKSUMS] + [PREFIX + rel for rel in expected])
    assert all(r.status == 200 for r in first)
    pairs = overlapping_connections(first)
    assert pairs, "no two requests from different connections were in flight at the same time"
    assert len({r.conn for r in first}) >= 2
    # The rerun asks for the fresh SHA256SUMS.txt and nothing else: every file was verified locally.
    assert [r.path for r in second] == [PREFIX + CHECKSUMS]


def test_corrupted_file_fails_naming_it_and_leaves_no_final_file(tmp_path, mirror, capsys):
    root, project = mirror
    rel = record_path(7, 100) + ".dat"
    dest = tmp_path / "dest"
    with MirrorServer(root) as server:
        server.faults.corrupt.add(PREFIX + rel)
        rc = run("download", "ptbxl", "--base-url", server.base_url, "--dest", dest, *FAST)
    err = capsys.readouterr().err
    assert rc == 1
    assert rel in err and "SHA-256 mismatch" in err and sums_of(project)[rel] in err
    assert not (dest / rel).exists()
    assert not list(dest.rglob("*.part"))
    with pytest.raises(StageError, match="missing"):
        verify_project("ptbxl", dest, progress=False)


def test_missing_file_404_names_it(tmp_path, mirror, capsys):
    root, _ = mirror
    rel = record_path(3, 100) + ".hea"
    with MirrorServer(root) as server:
        server.faults.missing.add(PREFIX + rel)
        rc = run("download", "ptbxl", "--base-url", server.base_url, "--dest", tmp_path / "dest", *FAST)
    err = capsys.readouterr().err
    assert rc == 1
    assert rel in err and "404" in err
    assert not (tmp_path / "dest" / rel).exists()


def test_server_error_twice_then_success(tmp_path, mirror):
    root, project = mirror
    rel = "scp_statements.csv"
    dest = tmp_path / "dest"
    with MirrorServer(root) as server:
        server.faults.fail_500[PREFIX + rel] = 2
        assert run("download", "ptbxl", "--base-url", server.base_url, "--dest", dest, *FAST) == 0
        hits = server.requests_for(PREFIX + rel)
    assert [r.status for r in hits] == [500, 500, 200]
    assert sha256_file(dest / rel) == sums_of(project)[rel]


def test_server_error_beyond_retries_fails(tmp_path, mirror, capsys):
    root, _ = mirror
    with MirrorServer(root) as server:
        server.faults.fail_500[PREFIX + "RECORDS"] = 3
        rc = run("download", "ptbxl", "--base-url", server.base_url, "--dest", tmp_path / "d", "--retries", "2",
                 *FAST)
        assert len(server.requests_for(PREFIX + "RECORDS")) == 3
    assert rc == 1 and "RECORDS" in capsys.readouterr().err
    assert not (tmp_path / "d" / "RECORDS").exists()


def test_killed_run_is_resumed_with_range_and_skips_verified_files(tmp_path, mirror):
    root, project = mirror
    expected = sums_of(project)
    rel = record_path(5, 500) + ".dat"  # 120 kB: the server drops the connection half way through
    dest = tmp_path / "dest"
    common = ["download", "ptbxl", "--base-url", None, "--dest", dest, "--rates", "100", "500",
              "--connections", "2", *FAST]
    with MirrorServer(root) as server:
        common[3] = server.base_url
        server.faults.abort[PREFIX + rel] = 1
        assert run(*common, "--retries", "0") == 1
        part = dest / Path(rel).parent / f".{Path(rel).name}.part"
        assert part.is_file() and 0 < part.stat().st_size < (project / rel).stat().st_size
        assert not (dest / rel).exists()
        verified_before = {r for r in expected if (dest / r).is_file() and sha256_file(dest / r) == expected[r]}
        assert verified_before, "the first run verified nothing before it failed"
        server.clear_log()
        assert run(*common) == 0
        second = server.requests

    asked = {r.path[len(PREFIX):] for r in second}
    assert not asked & verified_before, "the rerun asked again for files it had already verified"
    assert asked == {CHECKSUMS} | (set(expected) - verified_before)
    [resume] = [r for r in second if r.path == PREFIX + rel]
    assert resume.range == f"bytes={(project / rel).stat().st_size // 2}-" and resume.status == 206
    assert_tree(dest, expected)


def test_dropped_connection_is_resumed_within_the_run(tmp_path, mirror):
    root, project = mirror
    rel = "RECORDS"  # 1.2 MB
    dest = tmp_path / "dest"
    with MirrorServer(root) as server:
        server.faults.abort[PREFIX + rel] = 1
        assert run("download", "ptbxl", "--base-url", server.base_url, "--dest", dest, *FAST) == 0
        hits = server.requests_for(PREFIX + rel)
    assert [(r.range, r.status) for r in hits] == [(None, 200), (f"bytes={hits[0].sent}-", 206)]
    assert sha256_file(dest / rel) == sums_of(project)[rel]


def test_server_ignoring_range_restarts_from_zero(tmp_path, mirror):
    root, project = mirror
    rel = "RECORDS"
    dest = tmp_path / "dest"
    with MirrorServer(root) as server:
        server.faults.abort[PREFIX + rel] = 1
        server.faults.ignore_range.add(PREFIX + rel)
        assert run("download", "ptbxl", "--base-url", server.base_url, "--dest", dest, *FAST) == 0
        hits = server.requests_for(PREFIX + rel)
    assert [r.status for r in hits] == [200, 200] and hits[1].range is not None
    assert sha256_file(dest / rel) == sums_of(project)[rel]


def test_bad_partial_file_is_fetched_again_from_scratch(tmp_path, mirror):
    root, project = mirror
    rel = "scp_statements.csv"
    dest = tmp_path / "dest"
    size = (project / rel).stat().st_size
    (dest).mkdir()
    (dest / f".{rel}.part").write_bytes(b"x" * (size // 3))  # a partial file with wrong bytes
    with MirrorServer(root) as server:
        assert run("download", "ptbxl", "--base-url", server.base_url, "--dest", dest, *FAST) == 0
        hits = server.requests_for(PREFIX + rel)
    assert [(r.range, r.status) for r in hits] == [(f"bytes={size // 3}-", 206), (None, 200)]
    assert sha256_file(dest / rel) == sums_of(project)[rel]


def test_wrong_existing_file_is_replaced(tmp_path, mirror):
    root, project = mirror
    dest = tmp_path / "dest"
    (dest).mkdir()
    (dest / "LICENSE.txt").write_text("not the licence")
    with MirrorServer(root) as server:
        assert run("download", "ptbxl", "--base-url", server.base_url, "--dest", dest, *FAST) == 0
    assert sha256_file(dest / "LICENSE.txt") == sums_of(project)["LICENSE.txt"]


def test_file_url_mirror(tmp_path, mirror, capsys):
    root, project = mirror
    dest = tmp_path / "dest"
    manifest = download_project("ptbxl", base_url=root.resolve().as_uri() + "/", dest=dest, rates=[500],
                                retry_delay_s=0.01, progress=False)
    expected = {r: d for r, d in sums_of(project).items() if not r.startswith("records100/")}
    assert manifest["files"] == expected and manifest["url"].startswith("file://")
    assert_tree(dest, expected)
    assert not (dest / "records100").exists()
    # A file:// mirror that lacks a file fails the same way as HTTP 404.
    (project / "RECORDS").unlink()
    rc = run("download", "ptbxl", "--base-url", root.resolve().as_uri(), "--dest", tmp_path / "d2", *FAST)
    assert rc == 1 and "RECORDS" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ ZIP mode
def test_zip_mode_resumes_then_gives_the_same_verified_tree(tmp_path, mirror, capsys):
    root, project = mirror
    top = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
    zip_path = build_zip(project, root / "static" / f"{top}.zip", top)
    dest, manifest = tmp_path / "dest", tmp_path / "m.json"
    with MirrorServer(root) as server:
        zip_url = f"{server.base_url}static/{top}.zip"
        args = ["download", "ptbxl", "--via", "zip", "--zip-url", zip_url, "--dest", dest,
                "--rates", "100", "500", "--manifest", manifest, *FAST]
        server.faults.abort["/static/" + zip_path.name] = 1
        assert run(*args, "--retries", "0") == 1
        assert "giving up" in capsys.readouterr().err
        assert (dest / f".{zip_path.name}.part").is_file() and not (dest / "RECORDS").exists()
        assert run(*args) == 0
        hits = server.requests_for("/static/" + zip_path.name)
        server.clear_log()
        assert run(*args) == 0  # everything verified: the ZIP is not fetched again
        assert server.requests == []
    assert [r.status for r in hits] == [200, 206] and hits[1].range == f"bytes={hits[0].sent}-"
    expected = sums_of(project)
    assert_tree(dest, expected)
    assert not (dest / zip_path.name).exists()  # removed after success
    data = json.loads(manifest.read_text())
    assert data["via"] == "zip" and data["zip_url"] == zip_url and data["files"] == expected


def test_zip_member_with_wrong_hash_is_named(tmp_path, mirror, capsys):
    root, project = mirror
    rel = record_path(2, 100) + ".hea"
    good = sums_of(project)[rel]
    (project / rel).unlink()
    (project / rel).write_text("tampered header\n")  # SHA256SUMS.txt still lists the real file's hash
    top = "ptb-xl-1.0.3"
    zip_path = build_zip(project, tmp_path / "z" / f"{top}.zip", top)
    dest = tmp_path / "dest"
    rc = run("download", "ptbxl", "--via", "zip", "--zip-url", zip_path.as_uri(), "--dest", dest, *FAST)
    err = capsys.readouterr().err
    assert rc == 1 and rel in err and good in err
    assert not (dest / rel).exists()
    assert (dest / zip_path.name).is_file()  # kept for the rerun


# ------------------------------------------------------------------------------------------- verify
def test_verify_good_tree_then_tampered_and_missing(tmp_path, mirror, capsys):
    _, project = mirror
    manifest = tmp_path / "v.json"
    assert run("verify", "ptbxl", "--dest", project, "--rates", "100", "500", "--manifest", manifest,
               "--no-progress") == 0
    assert json.loads(manifest.read_text())["files"] == sums_of(project)
    rel = record_path(11, 100) + ".dat"
    data = (project / rel).read_bytes()
    (project / rel).unlink()
    (project / rel).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert run("verify", "ptbxl", "--dest", project, "--no-progress") == 1
    err = capsys.readouterr().err
    assert rel in err and "mismatch" in err
    assert run("verify", "ptbxl", "--dest", project, "--rates", "500", "--no-progress") == 0  # not selected
    (project / "RECORDS").unlink()
    assert run("verify", "ptbxl", "--dest", project, "--rates", "500", "--no-progress") == 1
    assert "RECORDS: missing" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ PTB-XL+
def test_ptbxl_plus_fetches_features_labels_and_top_level_only(tmp_path):
    files = {
        "LICENSE.txt": b"CC-BY 4.0\n",
        "RECORDS": b"median_beats/12sl/00000/00001_medians\n",
        "features/12sl_features.csv": b"HR__Global,ecg_id,QRS_Dur_Global\n71.0,1,92.0\n",
        "features/feature_description.csv": b"feature,description\nHR__Global,heart rate\n",
        "labels/12sl_statements.csv": b"ecg_id,statements\n1,\"['NSR']\"\n",
        "median_beats/12sl/00000/00001_medians.hea": b"00001_medians 12 500 600\n",
        "median_beats/12sl/00000/00001_medians.dat": bytes(range(256)) * 4,
        "fiducial_points/ecgdeli/00000/00001_points.atr": b"\x00\x01\x02",
    }
    root = tmp_path / "mirror"
    project = build_tree(root, "ptb-xl-plus", "1.0.1", files)
    dest = tmp_path / "dest"
    with MirrorServer(root) as server:
        assert run("download", "ptbxl_plus", "--base-url", server.base_url, "--dest", dest, *FAST) == 0
        asked = {r.path for r in server.requests}
        server.clear_log()
        assert run("download", "ptbxl_plus", "--base-url", server.base_url, "--dest", dest,
                   "--include", "features/", "labels/", "median_beats", *FAST) == 0
        asked_more = {r.path for r in server.requests}
    wanted = ["LICENSE.txt", "RECORDS", "features/12sl_features.csv", "features/feature_description.csv",
              "labels/12sl_statements.csv"]
    assert asked == {"/ptb-xl-plus/1.0.1/" + rel for rel in [CHECKSUMS, *wanted]}
    assert_tree(dest, {rel: d for rel, d in sums_of(project).items() if rel in wanted})
    assert not (dest / "fiducial_points").exists()
    assert asked_more == {"/ptb-xl-plus/1.0.1/" + rel for rel in
                          [CHECKSUMS, "median_beats/12sl/00000/00001_medians.hea",
                           "median_beats/12sl/00000/00001_medians.dat"]}
    assert not (dest / "fiducial_points").exists()
