"""ecglm translate --backend openai against a real OpenAI-compatible server on 127.0.0.1 (openai_server.py).

The server's default 'model' answers with the glossary's translation, so a valid run's English is
known; programmed replies script 429s, 500s, malformed and German replies.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from openai_server import ChatServer

from ecglm.cli import main
from ecglm.text.translate.cache import TranslationCache
from ecglm.text.translate.openai_backend import OpenAISettings, OpenAITranslator, _BadReply, _parse_reply
from ecglm.text.translate.translator import GlossaryTranslator, Hint, TranslationError, Translator

KEY = "sk-test-7f3a9c2e-never-log-me"
SPACES = " " * 26
ROWS = [
    (1, "sinusrhythmus lagetyp normal normales ekg"),
    (2, f"tachykardes vorhofflimmern ueberdrehter linkstyp 4.46{SPACES}unbestÄtigter bericht"),
    (3, "sinusrytm vÄnster el-axel eljest normalt ekg"),
    (4, "sinus rhythm. normal ecg. Edit: NORM 100, schlechte Qualität V2,V3,V5"),
    (5, "vorhofflimmern/-flattern periphere niederspannung"),
    (6, "sinusrhythmus lagetyp normal normales ekg"),  # same text as 1: translated once
    (7, "fÖrmaksflimmer/-fladder hÖgersidigt skÄnkelblock"),
    (8, "sinusbradykardie linkstyp rechtsschenkelblock"),
    (9, "atrial fibrillation. left axis deviation."),  # English: never sent
]
# the distinct texts the stage sends: bodies of 1, 2, 3, 5, 7, 8 and the Edit: note of 4
N_TEXTS = 7


@pytest.fixture
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def database(tmp_path) -> Path:
    path = tmp_path / "ptbxl_database.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ecg_id", "device", "report"])
        writer.writerows((i, "CS-12", r) for i, r in ROWS)
    return path


def run(server, database, tmp_path, *extra: str) -> int:
    return main(
        [
            "translate", "--database", str(database), "--out", str(tmp_path / "out" / "reports_en.parquet"),
            "--backend", "openai", "--model", "test-model", "--base-url", server.base_url,
            "--cache-dir", str(tmp_path / "cache"), "--backoff", "0.01", *extra,
        ]
    )


def cached(tmp_path) -> int:
    return len(TranslationCache(tmp_path / "cache"))


def expected_english() -> dict[int, str]:
    from ecglm.text.translate.glossary import load_glossary
    from ecglm.text.translate.langdetect import LanguageDetector
    from ecglm.text.translate.stage import translate_reports

    glossary = load_glossary()
    detector = LanguageDetector(glossary)
    result = translate_reports(list(ROWS), GlossaryTranslator(glossary, detector), glossary, detector)
    return {r["ecg_id"]: (r["report_en"], r["edit_note_en"]) for r in result.rows}


def test_success_batched_concurrent_cached(server, env, database, tmp_path, capsys, caplog):
    import polars as pl

    caplog.set_level(logging.DEBUG)
    assert run(server, database, tmp_path, "--batch-size", "3", "--workers", "3") == 0, capsys.readouterr().err
    assert len(server.log) == 3  # 7 texts, 3 per request
    assert all(entry["bearer"] and entry["auth"] == f"Bearer {KEY}" for entry in server.log)
    assert sorted(server.requested_texts()) == sorted(set(server.requested_texts()))
    assert len(server.requested_texts()) == N_TEXTS
    assert all(json.loads(e["body"]["messages"][-1]["content"])["items"] for e in server.log)
    assert {e["body"]["model"] for e in server.log} == {"test-model"}

    out = tmp_path / "out" / "reports_en.parquet"
    frame = pl.read_parquet(out)
    assert set(frame["backend"]) == {"openai"} and set(frame["model"]) == {"test-model"}
    want = expected_english()
    for row in frame.to_dicts():
        assert (row["report_en"], row["edit_note_en"]) == want[row["ecg_id"]]
    assert cached(tmp_path) == N_TEXTS

    # the key is never logged or written
    captured = capsys.readouterr()
    assert KEY not in captured.err + captured.out + caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path

    # a re-run sends nothing: everything comes from the cache
    server.log.clear()
    assert run(server, database, tmp_path, "--batch-size", "3") == 0
    assert server.log == []
    assert pl.read_parquet(out).equals(frame)


def test_429_then_success(server, env, database, tmp_path, capsys):
    server.push(status=429, headers={"Retry-After": "0"}, message="slow down")
    assert run(server, database, tmp_path, "--batch-size", "50", "--workers", "1") == 0, capsys.readouterr().err
    assert len(server.log) == 2  # the 429, then the same batch again
    assert server.log[0]["body"] == server.log[1]["body"]
    assert cached(tmp_path) == N_TEXTS


def test_500_storm_exhausts_retries_and_cache_keeps_done_work(server, env, database, tmp_path, capsys):
    server.push(status=200)  # the first batch goes through
    server.push(status=500, times=100)  # then the server fails
    args = ("--batch-size", "3", "--workers", "1", "--retries", "2")
    assert run(server, database, tmp_path, *args) == 1
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "gave up after 2 retries" in err and "ecg_id" in err
    assert len(server.log) == 1 + 3  # one success, then the first try and 2 retries of the next batch
    assert not (tmp_path / "out" / "reports_en.parquet").exists()
    first_batch = server.requested_texts()[:3]
    assert cached(tmp_path) == 3

    # the server recovers; the resumed run never sends a text that was already answered
    server.script.clear()
    server.log.clear()
    assert run(server, database, tmp_path, *args) == 0, capsys.readouterr().err
    resent = set(server.requested_texts()) & set(first_batch)
    assert not resent
    assert len(server.requested_texts()) == N_TEXTS - 3
    assert cached(tmp_path) == N_TEXTS


def test_malformed_reply_is_retried(server, env, database, tmp_path, capsys):
    server.push(content="Sure! Here are your translations: ...")
    assert run(server, database, tmp_path, "--batch-size", "50", "--workers", "1") == 0, capsys.readouterr().err
    assert len(server.log) == 1 + N_TEXTS  # the bad batch, then each item on its own


def test_malformed_replies_end_with_an_error_naming_the_report(server, env, database, tmp_path, capsys):
    server.push(content='{"translations": {}}', times=100)
    assert run(server, database, tmp_path, "--batch-size", "50", "--workers", "1", "--retries", "1") == 1
    err = capsys.readouterr().err
    assert "malformed reply" in err and "ecg_id 1 " in err
    assert cached(tmp_path) == 0


def test_reply_still_in_german_is_rejected(server, env, database, tmp_path, capsys):
    from openai_server import glossary_responder

    def lazy_model(items):  # leaves report 5 in German, translates the rest
        answer = glossary_responder(items)
        for item in items:
            if "niederspannung" in item["text"]:
                answer[item["id"]] = item["text"]
        return answer

    server.responder = lazy_model
    assert run(server, database, tmp_path, "--batch-size", "50", "--workers", "1", "--retries", "2") == 1
    err = capsys.readouterr().err
    assert "ecg_id 5:" in err and "German/Swedish word(s) left" in err and "niederspannung" in err
    assert len(server.log) == 1 + 2  # the batch, then report 5 alone twice
    assert cached(tmp_path) == N_TEXTS - 1  # every other translation is kept


def test_request_budget(server, env, database, tmp_path, capsys):
    args = ("--batch-size", "3", "--workers", "1")
    assert run(server, database, tmp_path, *args, "--max-requests", "2") == 1
    err = capsys.readouterr().err
    assert "request budget of 2" in err and "--max-requests" in err and "cached" in err
    assert len(server.log) == 2 and cached(tmp_path) == 6
    answered = set(server.requested_texts())
    server.log.clear()
    assert run(server, database, tmp_path, *args, "--max-requests", "2") == 0, capsys.readouterr().err
    assert len(server.log) == 1 and not set(server.requested_texts()) & answered


def test_client_error_is_not_retried(server, env, database, tmp_path, capsys):
    server.push(status=401, message="invalid api key")
    assert run(server, database, tmp_path, "--workers", "1") == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "invalid api key" in err and KEY not in err
    assert len(server.log) == 1


def test_missing_key(server, database, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    assert run(server, database, tmp_path, "--api-key-env", "MY_KEY") == 1
    assert "MY_KEY" in capsys.readouterr().err and server.log == []


def test_named_key_variable(server, database, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_KEY", "other-key")
    assert run(server, database, tmp_path, "--api-key-env", "MY_KEY") == 0
    assert {e["auth"] for e in server.log} == {"Bearer other-key"}


# --- the backend on its own ------------------------------------------------------------------
def test_backend_implements_translator_and_validates(server, env, tmp_path):
    translator = OpenAITranslator(
        OpenAISettings(model="m", base_url=server.base_url, batch_size=2, workers=2, backoff_s=0.01),
        TranslationCache(tmp_path / "cache"),
    )
    assert isinstance(translator, Translator) and translator.name == "openai" and translator.model == "m"
    texts = ["sinusrhythmus normales ekg", "sinusrytm normalt ekg", "", "sinusrhythmus normales ekg"]
    hints = [Hint("de", False, "ecg_id 1"), Hint("sv"), Hint("de"), Hint("de", False, "ecg_id 4")]
    assert translator.translate(texts, hints) == ["sinus rhythm normal ecg", "sinus rhythm normal ecg", "",
                                                  "sinus rhythm normal ecg"]
    assert len(server.requested_texts()) == 2  # empty and repeated texts are not sent
    assert translator.problems("sinus rhythm normal axis", "sinusrhythmus lagetyp normal") is None
    assert "lagetyp" in translator.problems("sinus rhythm lagetyp normal", "sinusrhythmus lagetyp normal")
    assert translator.problems("", "sinusrhythmus") == "empty translation"
    assert translator.problems("qrs(t) abnormal v1-v3 NORM 100", "qrs(t) abnorm v1-v3 NORM 100") is None


def test_budget_error_type(server, env, tmp_path):
    translator = OpenAITranslator(
        OpenAISettings(base_url=server.base_url, batch_size=1, workers=1, max_requests=0),
        TranslationCache(tmp_path / "cache"),
    )
    with pytest.raises(TranslationError, match="request budget of 0"):
        translator.translate(["sinusrhythmus"], [Hint("de")])
    assert server.log == []


@pytest.mark.parametrize(
    "content, ok",
    [
        ('{"translations": {"0": "a", "1": "b"}}', True),
        ('{"0": "a", "1": "b"}', True),
        ('```json\n{"translations": {"0": "a", "1": "b"}}\n```', True),
        ('{"translations": {"0": "a"}}', False),
        ("[1, 2]", False),
        ("", False),
        ("not json", False),
    ],
)
def test_parse_reply(content, ok):
    if ok:
        assert _parse_reply(content, ["0", "1"]) == {"0": "a", "1": "b"}
    else:
        with pytest.raises(_BadReply):
            _parse_reply(content, ["0", "1"])


def test_an_error_that_echoes_the_authorization_header_prints_no_key(server, database, tmp_path, env, capsys, caplog):
    """An endpoint whose 401 body echoes the request's headers: the key appears in no error or log line."""
    server.push(status=401, message=f"bad key; request headers: {{'Authorization': 'Bearer {KEY}'}}")
    assert run(server, database, tmp_path, "--retries", "0") == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "[REDACTED]" in err
    assert KEY not in err and KEY not in caplog.text
    assert server.log[0]["auth"] == f"Bearer {KEY}"  # the key was sent, only never printed
