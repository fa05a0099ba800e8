"""`ecglm download ecgqa`: the repository archive of a pinned commit, served on loopback, each file checked
against its git blob id. The archive is built from the real ECG-QA files in ../shared/ecgqa-sample."""

from __future__ import annotations

import json
import subprocess
import zipfile

import pytest
from mirror import MirrorServer

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.data.ecgqa_download import download_ecgqa, git_blob_id, packaged_manifest, read_manifest

COMMIT = "3eabbce1c633695a82afe47966aabce4d7caa06b"
SAMPLE_FILES = ("answers.csv", "answers_for_each_template.csv", "train_ecgs.tsv", "paraphrased/train/120000.json",
                "paraphrased/valid/60000.json", "template/valid/60000.json")  # fmt: skip


def test_the_packaged_manifest_pins_the_commit_and_matches_the_real_files(ecgqa_sample):
    manifest = read_manifest(packaged_manifest())
    assert manifest["commit"] == COMMIT and manifest["repository"] == "Jwoo5/ecg-qa"
    assert len([f for f in manifest["files"] if f.endswith(".json")]) == 86
    for name in SAMPLE_FILES:  # the sample's files are those of the pinned commit
        assert git_blob_id((ecgqa_sample / "ptbxl" / name).read_bytes()) == manifest["files"][f"ecgqa/ptbxl/{name}"]


def test_git_blob_id_is_gits():
    data = b"template_id,classes\n"
    try:
        expected = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    assert git_blob_id(data) == expected.decode().strip()


def archive(tmp_path, ecgqa_sample, *, tamper: str | None = None, extra: dict[str, bytes] | None = None):
    """A GitHub-style archive (one top folder) of the sample's files, its manifest, and the served folder."""
    served = tmp_path / "served"
    served.mkdir()
    files = {f"ecgqa/ptbxl/{name}": (ecgqa_sample / "ptbxl" / name).read_bytes() for name in SAMPLE_FILES}
    manifest = {"format": "ecglm-git-manifest/1", "repository": "Jwoo5/ecg-qa", "commit": COMMIT,
                "files": {name: git_blob_id(data) for name, data in files.items()}}  # fmt: skip
    if tamper:
        files[tamper] = files[tamper].replace(b"yes", b"no", 1)
    with zipfile.ZipFile(served / "archive.zip", "w") as zf:
        for name, data in {**files, **(extra or {})}.items():
            zf.writestr(f"ecg-qa-{COMMIT}/{name}", data)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return served, path


def test_download_extracts_the_verified_files_and_reruns_without_a_request(ecgqa_sample, tmp_path):
    served, manifest = archive(tmp_path, ecgqa_sample, extra={"../escape.txt": b"x", "README.md": b"not pinned"})
    dest = tmp_path / "resources" / "ecgqa" / COMMIT
    with MirrorServer(served) as server:
        url = server.base_url + "archive.zip"
        args = ["download", "ecgqa", "--dest", str(dest), "--zip-url", url, "--git-manifest", str(manifest),
                "--no-progress"]  # fmt: skip
        assert cli.main(args) == 0
        assert len(server.requests_for("/archive.zip")) == 1
        assert cli.main(args) == 0  # already verified: no second request
        assert len(server.requests_for("/archive.zip")) == 1
    for name in SAMPLE_FILES:
        assert (dest / "ecgqa" / "ptbxl" / name).read_bytes() == (ecgqa_sample / "ptbxl" / name).read_bytes()
    assert not (tmp_path / "escape.txt").exists() and not (dest / "README.md").exists()  # only the pinned files
    done = json.loads((dest / "ecglm-manifest.json").read_text())
    assert done["commit"] == COMMIT and done["n_files"] == len(SAMPLE_FILES)
    assert not list(dest.parent.glob(".*.zip"))  # the archive is removed after extraction
    from ecglm.data.qa import find_root

    assert find_root(dest) == dest / "ecgqa" / "ptbxl"  # qa-data reads the folder as it is


def test_a_file_that_differs_from_the_commit_is_named_and_nothing_is_installed(ecgqa_sample, tmp_path):
    served, manifest = archive(tmp_path, ecgqa_sample, tamper="ecgqa/ptbxl/paraphrased/train/120000.json")
    dest = tmp_path / "dest"
    with MirrorServer(served) as server:
        with pytest.raises(StageError, match=r"paraphrased/train/120000.json: git blob id mismatch"):
            download_ecgqa(dest, url=server.base_url + "archive.zip", manifest_path=manifest, progress=False)
    assert not dest.exists()


def test_a_missing_file_and_a_bad_manifest_are_named(ecgqa_sample, tmp_path):
    served, manifest = archive(tmp_path, ecgqa_sample)
    doc = json.loads(manifest.read_text())
    doc["files"]["ecgqa/ptbxl/paraphrased/test/00000.json"] = "0" * 40
    manifest.write_text(json.dumps(doc))
    with MirrorServer(served) as server:
        with pytest.raises(StageError, match=r"1 file\(s\) of commit .* are not in the archive, first "
                                             r"ecgqa/ptbxl/paraphrased/test/00000.json"):
            download_ecgqa(tmp_path / "dest", url=server.base_url + "archive.zip", manifest_path=manifest,
                           progress=False)  # fmt: skip
    doc["files"] = {"../outside.json": "0" * 40}
    manifest.write_text(json.dumps(doc))
    with pytest.raises(StageError, match="is not a relative path inside the repository"):
        read_manifest(manifest)
