#!/usr/bin/env python
"""The README's picture of the chat page, made from a run's chat model in a real headless Chromium.

    python scripts/chat_screenshot.py --model results/demo/chat \\
        --record resources/demo/demo/ptb-xl/1.0.3/records500/00000/00001_hr --out docs/chat-page.png

Starts `ecglm serve`'s app on a free loopback port, uploads the record (its .hea and .dat), fills in the
person's age and sex, asks one question, waits for the whole answer and saves a screenshot. Needs
Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an ecglm finetune-chat output folder")
    parser.add_argument("--record", required=True, help="a WFDB record path without its suffix")
    parser.add_argument("--question", default="What does this ECG show?")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    args = parser.parse_args(argv)

    import requests
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ecglm.chat.session import ChatModel, ChatSettings
    from ecglm.chat.web import create_app

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise SystemExit("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    app = create_app(ChatModel.load(args.model, settings=ChatSettings(max_new_tokens=120)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(url)
        driver.find_element(By.ID, "files").send_keys(f"{Path(args.record).resolve()}.hea\n"
                                                      f"{Path(args.record).resolve()}.dat")  # fmt: skip
        driver.find_element(By.ID, "age").send_keys("63")
        driver.find_element(By.ID, "sex").send_keys("male")
        driver.find_element(By.ID, "load").click()
        wait = WebDriverWait(driver, 300)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#leads polyline")) > 0)
        driver.find_element(By.ID, "question").send_keys(args.question)
        driver.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.msg.model[data-done="true"]'))
        driver.execute_script("window.scrollTo(0, 0)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
        server.should_exit = True
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
