"""`ecglm serve`: the chat's web page on a real server on loopback, driven over HTTP and in a real headless
Chromium (Debian's chromium and chromium-driver; .ci/run installs them)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from test_chat import _demo_record, chat_dir  # noqa: F401  (fixtures)
from test_chat_finetune import llm_dir, store  # noqa: F401  (fixtures)

import ecglm.chat.web as ecglm_chat_web
from ecglm.chat.session import ChatModel, ChatSettings
from ecglm.chat.web import COOKIE, PickableRecords, create_app

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(chat_dir, store):  # noqa: F811
    import uvicorn

    model = ChatModel.load(chat_dir, device="cpu", settings=ChatSettings(max_new_tokens=6, max_context=1200))
    app = create_app(model, records=PickableRecords(store / "records.parquet", store / "signals_100.npy"),
                     max_upload_mb=2)  # fmt: skip
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/api/records", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url, app.state.server
    instance.should_exit = True
    thread.join(timeout=10)


def _session(url):
    s = requests.Session()
    page = s.get(url + "/")
    assert page.status_code == 200 and COOKIE in s.cookies and "'self'" in page.headers["Content-Security-Policy"]
    return s


def _upload(s, url, *paths, **form):
    files = [("files", (Path(p).name, Path(p).read_bytes())) for p in paths]
    return s.post(url + "/api/ecg", files=files or None, data=form)


def _ask(s, url, question):
    response = s.post(url + "/api/ask", json={"question": question}, stream=True)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.iter_lines() if line]


def test_an_upload_is_read_measured_and_answered_per_session(server, demo_world):
    url, state = server
    record = _demo_record(demo_world)
    a, b = _session(url), _session(url)
    response = _upload(a, url, f"{record}.hea", f"{record}.dat", age="63", sex="male")
    assert response.status_code == 200, response.text
    view = response.json()
    assert [lead["name"] for lead in view["leads"]][:3] == ["I", "II", "III"] and view["fs"] == 500
    assert all(lead["recorded"] and len(lead["samples"]) == 2500 for lead in view["leads"])  # 10 s at 250 Hz
    assert any(m["label"] == "heart rate" for m in view["measurements"]) and view["failure"] is None
    assert view["source"] == "00001_hr.hea"  # the user's file name, not the server's temporary folder
    picked = b.post(url + "/api/ecg", data={"ecg_id": str(next(iter(state.records.rows))), "age": "40"}).json()
    assert picked["source"].startswith("test record ") and picked["fs"] == 100
    lines = _ask(a, url, "What does this ECG show?")
    assert lines[-1]["done"] and "".join(x.get("text", "") for x in lines[:-1]) is not None
    _ask(b, url, "Is my rhythm regular?")
    sessions = {sid: s.conversation for sid, s in state.sessions.items() if s.conversation is not None}
    mine, theirs = sessions[a.cookies[COOKIE]], sessions[b.cookies[COOKIE]]
    assert [q for q, _ in mine.turns] == ["What does this ECG show?"] and [q for q, _ in theirs.turns] == [
        "Is my rhythm regular?"]
    assert mine.ecg.recording.fs == 500 and theirs.ecg.recording.fs == 100 and theirs.patient.age == 40


def test_the_server_refuses_what_it_must_not_trust(server, demo_world, tmp_path):
    url, _ = server
    record = _demo_record(demo_world)
    assert requests.post(url + "/api/ecg", data={"ecg_id": "1"}).status_code == 403  # no session cookie
    s = _session(url)
    header = Path(f"{record}.hea").read_text()
    (tmp_path / "evil.hea").write_text(header.replace("00001_hr.dat", "../00001_hr.dat"))
    response = _upload(s, url, tmp_path / "evil.hea", f"{record}.dat")
    assert response.status_code == 400 and "not beside the header" in response.json()["error"]
    assert "ecglm-upload-" not in response.json()["error"]  # the user's file is named, not the server's folder
    first, rest = header.split("\n", 1)
    fields = first.split()
    fields[3] = str(500 * 61)
    (tmp_path / "long.hea").write_text(" ".join(fields) + "\n" + rest)
    response = _upload(s, url, tmp_path / "long.hea", f"{record}.dat")
    assert response.status_code == 400 and "declares 61.0 s" in response.json()["error"]
    for query in ("name=page.html&media=text/plain", "name=../../../../etc/hostname"):  # never a path from a request
        assert s.get(f"{url}/page.js?{query}").text == (Path(ecglm_chat_web.__file__).with_name("page") / "page.js").read_text()
    bad_name = s.post(url + "/api/ecg", files=[("files", ("../up.csv", b"I\n1\n"))])
    assert bad_name.status_code == 400 and "refused" in bad_name.json()["error"]
    html_name = s.post(url + "/api/ecg", files=[("files", ("<img src=x onerror=alert(1)>.csv", b"I\n1\n"))])
    assert html_name.status_code == 400
    (tmp_path / "big.csv").write_bytes(b"I\n" + b"0.1\n" * 700_000)  # 2.8 MB > 2 MB
    assert _upload(s, url, tmp_path / "big.csv").status_code == 413
    (tmp_path / "objects.npy").write_bytes(b"\x93NUMPY" + b"\x00" * 100)
    assert _upload(s, url, tmp_path / "objects.npy", fs="500").status_code == 400


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does)")  # fmt: skip
def test_the_page_in_a_real_browser_uploads_plots_and_answers(server, demo_world):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    record = _demo_record(demo_world)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, 120)
    try:
        driver.get(url + "/")
        assert "research model, not a medical device" in driver.find_element(By.ID, "notice").text
        driver.find_element(By.ID, "files").send_keys(f"{record}.hea\n{record}.dat")
        driver.find_element(By.ID, "age").send_keys("63")
        driver.find_element(By.ID, "load").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#leads polyline")) == 12)
        assert "heart rate" in driver.find_element(By.ID, "measurements").text
        assert "Findings in general" in driver.find_element(By.ID, "general").text
        lead_v1 = driver.find_element(By.CSS_SELECTOR, '.lead[data-lead="V1"] .finding').text
        assert lead_v1  # each lead's findings beside its plot ("no finding" where none)
        question = "What does <b>this</b> ECG show?"
        driver.find_element(By.ID, "question").send_keys(question)
        driver.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.msg.model[data-done="true"]'))
        assert driver.find_element(By.CSS_SELECTOR, ".msg.user").text == question  # shown as text, not markup
        assert not driver.find_elements(By.CSS_SELECTOR, "#messages b")
        if os.environ.get("ECGLM_SCREENSHOT"):
            driver.save_screenshot(os.environ["ECGLM_SCREENSHOT"])
        urls = set()
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.add(message["params"]["request"]["url"])
        assert urls and all(u.startswith(url + "/") or u.startswith("data:") for u in urls), urls
    finally:
        driver.quit()
