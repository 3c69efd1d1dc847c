"""The web page (issue #21) in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against a real `memfs serve` with a token, the real model and real files.

Screenshots of every screen are written to the test's artifact folder (and to docs/screenshots/ when
MEMFS_SCREENSHOTS=docs, to refresh the README's set).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_server import Server, free_port, wait_until

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extras)")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromium-driver are not installed (scripts/test.sh installs them as root)")

TOKEN = "web-page-token-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
HOSTILE = ('<script>window.__xss = "script"; alert(1)</script> then <img src=x onerror="window.__xss=\'img\'"> '
           'and <a href="javascript:window.__xss=\'link\'">a link</a>')
MEMORIES = [
    ("The Lisbon office is run by Maria Santos, who joined from the Porto team", ["people", "office"]),
    ("User prefers the dark theme in every editor and terminal", ["prefs", "ui"]),
    ("Deploy failed: the database migration timed out after 30 seconds (E4417)", ["ops", "incident"]),
    (HOSTILE, ["hostile"]),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("web") / "store"
    s = Server(root, env={"MEMFS_API_TOKEN": TOKEN})
    s.ids = {}
    try:
        for content, tags in MEMORIES:
            status, answer = api(s, "POST", "/memories", {"content": content, "tags": tags})
            assert status == 201, answer
            s.ids[content] = answer["id"]
        yield s
    finally:
        if s.proc.poll() is None:
            assert s.stop() == 0


def api(server, method, path, body=None, *, token=TOKEN, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    h = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def cli(server, *args):
    env = {**server.env, "MEMFS_ROOT": str(server.root)}
    return subprocess.run([sys.executable, "-m", "memfs", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    folders = [tmp_path / "screenshots"] + ([REPO / "docs" / "screenshots"] if os.environ.get("MEMFS_SCREENSHOTS") == "docs" else [])
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)

    def shoot(driver, name: str) -> None:
        for f in folders:
            assert driver.save_screenshot(str(f / f"{name}.png"))
    return shoot


def login(driver, server) -> None:
    driver.get(server.url + "/")
    if not driver.find_elements(By.ID, "token"):  # signed in by an earlier test: sign out first
        driver.delete_all_cookies()
        driver.get(server.url + "/")
    wait(driver, lambda d: d.current_url.endswith("/ui/login"), "the login page (/ redirects there)")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: d.find_elements(By.ID, "q"), "the search screen after signing in")


def wait(driver, condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition(driver)
        except Exception:  # an element replaced while we looked: look again
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout} s for {what}; page: {driver.current_url}")


def hit_titles(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#hits .hit-head a")]


def test_a_newcomers_flow_search_open_edit_create_delete(server, browser, shots):
    login(browser, server)
    box = browser.find_element(By.ID, "q")
    box.send_keys("who manages our office in Portugal")  # a paraphrase: no word but "office" in common
    wait(browser, lambda d: hit_titles(d) and hit_titles(d)[0].startswith("The Lisbon office"), "the paraphrase at rank 1")
    assert "q=who+manages" in browser.current_url  # the URL holds the query: a search can be shared
    marks = [m.text.lower() for m in browser.find_elements(By.CSS_SELECTOR, "#hits .hit mark")]
    assert "office" in marks
    shots(browser, "search")

    browser.find_element(By.CSS_SELECTOR, "#hits .hit-head a").click()
    wait(browser, lambda d: d.find_elements(By.ID, "content"), "the memory's page")
    lisbon = server.ids[MEMORIES[0][0]]
    assert browser.find_element(By.ID, "content").text == MEMORIES[0][0]
    assert "data/memories/" in browser.page_source
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#neighbours li"), "nearest neighbours")
    shots(browser, "memory")

    browser.find_element(By.CSS_SELECTOR, "a[data-view=edit]").click()
    tags = wait(browser, lambda d: (e := d.find_element(By.ID, "edit-tags")).get_attribute("value") and e, "the edit form")
    tags.clear()
    tags.send_keys("people, office, lisbon")
    shots(browser, "edit")
    browser.find_element(By.ID, "save").click()
    wait(browser, lambda d: d.find_elements(By.ID, "content"), "the saved memory")
    got = cli(server, "get", lisbon, "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["tags"] == ["people", "office", "lisbon"]

    browser.get(server.url + "/?view=new")
    wait(browser, lambda d: d.find_elements(By.ID, "edit-content"), "the new-memory form")
    browser.find_element(By.ID, "edit-content").send_keys("Created from the web page: the backup window is 02:00 UTC")
    browser.find_element(By.ID, "edit-tags").send_keys("web, ops")
    browser.find_element(By.ID, "save").click()
    wait(browser, lambda d: "view=memory" in d.current_url and d.find_elements(By.ID, "content"), "the new memory's page")
    listed = json.loads(cli(server, "list", "--tag", "web", "--json").stdout)
    assert [m["content"] for m in listed["memories"]] == ["Created from the web page: the backup window is 02:00 UTC"]
    new_id = listed["memories"][0]["id"]

    browser.find_element(By.ID, "delete").click()
    browser.switch_to.alert.accept()  # "Delete this memory?"
    wait(browser, lambda d: "view=browse" in d.current_url, "the list after deleting")
    gone = cli(server, "get", new_id)
    assert gone.returncode == 3 and "no memory" in (gone.stderr + gone.stdout).lower()

    for screen in ("browse", "health", "backups", "sync"):
        browser.get(f"{server.url}/?view={screen}")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"), f"the {screen} screen")
        time.sleep(0.5)
        shots(browser, screen)


def test_the_health_screen_shows_counts_chart_and_disk(server, browser):
    login(browser, server)
    browser.get(server.url + "/?view=health")
    count = wait(browser, lambda d: d.find_element(By.ID, "memory-count").text, "the memory count")
    assert int(count) == int(api(server, "GET", "/stats")[1]["memories"])
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")
    assert "memories" in browser.find_element(By.CSS_SELECTOR, ".health").text
    wait(browser, lambda d: "None: every file is valid" in d.find_element(By.ID, "invalid").text, "the validate result")


def test_a_hand_dropped_file_appears_in_an_open_page_without_a_reload(server, browser):
    login(browser, server)
    browser.get(server.url + "/?view=browse")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#browse-list tr"), "the first page")
    browser.execute_script("window.__same_page = 'yes'")  # gone if the page reloads
    wait(browser, lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"), "the live connection")
    text = "Dropped in by hand: the quarterly report goes to finance on Fridays"
    (server.root / "data" / "memories" / "dropped.json").write_text(json.dumps({"content": text, "tags": ["hand"]}))
    started = time.monotonic()
    wait(browser, lambda d: text in d.find_element(By.ID, "browse-list").text, "the dropped file in the open page")
    took = time.monotonic() - started
    assert browser.execute_script("return window.__same_page") == "yes"
    print(f"hand-dropped file visible in the open page after {took:.2f} s")  # the bench measures it


def test_memory_content_is_inert_in_the_browser(server, browser):
    login(browser, server)
    hostile = server.ids[HOSTILE]
    browser.get(server.url + "/?view=memory&id=" + hostile)
    wait(browser, lambda d: d.find_elements(By.ID, "content"), "the hostile memory's page")
    browser.get(server.url + "/?view=search&q=" + "javascript+link+script")
    wait(browser, lambda d: hit_titles(d), "search hits")
    browser.get(server.url + "/?view=memory&id=" + hostile)
    content = wait(browser, lambda d: d.find_element(By.ID, "content"), "the hostile memory's page")
    assert content.text == HOSTILE  # shown as the text it is
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return window.__xss === undefined")
    # The page made no element out of the content: no image, no link to javascript:.
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    assert not browser.find_elements(By.CSS_SELECTOR, "a[href^='javascript:' i]")
    for link in browser.find_elements(By.CSS_SELECTOR, "main a"):
        assert link.get_attribute("href").startswith(server.url + "/"), link.get_attribute("href")
    # The second wall: the page's policy forbids inline script and any other origin.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/", headers={"Accept": "text/html", "Authorization": f"Bearer {TOKEN}"})
    r = conn.getresponse()
    r.read()
    conn.close()
    assert "script-src 'self'" in r.getheader("content-security-policy")
    assert "unsafe-inline" not in r.getheader("content-security-policy")


def test_with_a_token_nothing_without_it_and_a_forged_cross_site_post_is_refused(server, browser, tmp_path):
    # No page and no data without the token: a browser is sent to the login page, a script gets 401.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/", headers={"Accept": "text/html"})
    r = conn.getresponse()
    assert r.status == 303 and r.getheader("location") == "/ui/login" and b"memfs" not in r.read()
    conn.close()
    for path in ("/", "/memories", "/stats", "/events", "/ui/app.js", f"/memories/{server.ids[MEMORIES[0][0]]}"):
        status, answer = api(server, "GET", path, token=None)
        assert status == 401, (path, answer)
    status, answer = api(server, "POST", "/ui/login", token=None)
    assert status == 303  # no token given: back to the form, no cookie
    # A wrong cookie is no cookie.
    assert api(server, "GET", "/stats", token=None, headers={"Cookie": "memfs_session=forged"})[0] == 401

    # A page on another origin (another port of 127.0.0.1: the same *site*, so SameSite alone would
    # let the cookie through) posts a form to /memories in a browser that is signed in.
    login(browser, server)
    before = api(server, "GET", "/stats")[1]["memories"]
    evil = tmp_path / "evil"
    evil.mkdir()
    # text/plain form encoding sends name=value: this pair makes the body valid JSON,
    # {"content": "forged by another site", "tags": ["forged"], "x": "="}
    name = '{"content": "forged by another site", "tags": ["forged"], "x": "'
    (evil / "index.html").write_text(
        f'<form id=f method=post enctype="text/plain" action="{server.url}/memories">'
        f"<input name='{name}' value='\"}}'></form><script>document.getElementById('f').submit()</script>")
    port = free_port()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(evil), **k)  # noqa: E731
    evil_server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=evil_server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{port}/index.html")
        wait(browser, lambda d: d.current_url.startswith(server.url), "the forged form to post")
        time.sleep(1)
        assert "unauthorized" in browser.page_source
    finally:
        evil_server.shutdown()
    assert api(server, "GET", "/stats")[1]["memories"] == before
    listed = json.loads(cli(server, "list", "--tag", "forged", "--json").stdout)
    assert listed["memories"] == []


def test_readable_at_a_phone_width(server, browser, shots):
    login(browser, server)
    browser.set_window_size(390, 844)
    try:
        for screen in ("search&q=office", "browse", "health"):
            browser.get(f"{server.url}/?view={screen}")
            wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li, #browse-list tr, #memory-count"),
                 f"the {screen} screen")
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"), screen
        shots(browser, "phone-health")
    finally:
        browser.set_window_size(1200, 900)


def test_the_sync_screen_shows_a_conflict_side_by_side_and_resolves_it(server, browser, shots, tmp_path):
    """Issue #21 item 6 over issue #20: a conflict made by a real second replica through a folder
    remote shows both versions on the page, and "Keep the other version" resolves it in the store."""
    from sync_helpers import replica

    remote = str(tmp_path / "remote")
    status, added = api(server, "POST", "/memories", {"content": "The VPN gateway is vpn-1.example.net", "tags": ["ops"]})
    assert status == 201
    mem_id = added["id"]
    other = replica(tmp_path, "laptop")
    try:
        assert cli(server, "sync", remote).returncode == 0
        other.sync(remote)
        assert api(server, "PATCH", f"/memories/{mem_id}", {"content": "The VPN gateway moved to vpn-2.example.net"})[0] == 200
        other.update(mem_id, content="The VPN gateway is vpn-1, reachable only from the office")
        other.sync(remote)
        assert cli(server, "sync", remote).returncode == 1  # done, with a conflict waiting
    finally:
        other.close()
    login(browser, server)
    browser.get(server.url + "/?view=sync")
    cards = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".conflict"), "the conflict inbox")
    text = cards[0].text
    assert "vpn-2.example.net" in text and "reachable only from the office" in text
    shots(browser, "sync")
    loser = json.loads(cli(server, "conflicts", "list", "--json").stdout)
    loser = (loser["conflicts"] if isinstance(loser, dict) else loser)[0]["loser"]["doc"]["content"]
    cards[0].find_element(By.XPATH, ".//button[text()='Keep the other version']").click()
    wait(browser, lambda d: "No open conflicts" in d.find_element(By.CSS_SELECTOR, ".sync").text, "the emptied inbox")
    assert json.loads(cli(server, "get", mem_id, "--json").stdout)["content"] == loser


def test_the_session_cookie_is_http_only_and_same_site_strict(server, browser):
    """The token is kept in a cookie no script can read and no other site's page sends."""
    login(browser, server)
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["memfs_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict", session
    assert TOKEN not in session["value"]  # a value derived from the token, not the token itself
    assert "memfs_session" not in browser.execute_script("return document.cookie")


def toast_text(driver) -> str:
    return driver.find_element(By.ID, "toast").text


def test_an_edit_over_a_memory_changed_on_disk_meanwhile_is_not_saved(server, browser):
    """No silent overwrite: the form compares the version it loaded with the one stored at save time."""
    login(browser, server)
    mem_id = server.ids[MEMORIES[1][0]]
    path = server.root / "data" / "memories" / json.loads(cli(server, "get", mem_id, "--json").stdout)["path"]
    browser.get(f"{server.url}/?view=edit&id={mem_id}")
    tags = wait(browser, lambda d: (e := d.find_element(By.ID, "edit-tags")).get_attribute("value") and e, "the edit form")
    by_hand = json.loads(path.read_text())
    by_hand["content"] = "User prefers the light theme now (changed by hand in vim)"
    path.write_text(json.dumps(by_hand))
    wait(browser, lambda d: json.loads(cli(server, "get", mem_id, "--json").stdout)["content"] == by_hand["content"],
         "the hand edit indexed", timeout=60)
    tags.send_keys(", edited-in-the-page")
    browser.find_element(By.ID, "save").click()
    wait(browser, lambda d: "Not saved" in toast_text(d), "the refusal")
    kept = json.loads(path.read_text())
    assert kept["content"] == by_hand["content"] and "edited-in-the-page" not in kept["tags"]


def test_an_invalid_file_links_its_last_good_version_and_one_backup_is_verified(server, browser):
    login(browser, server)
    mem_id = server.ids[MEMORIES[2][0]]
    path = server.root / "data" / "memories" / json.loads(cli(server, "get", mem_id, "--json").stdout)["path"]
    good = path.read_bytes()
    try:
        path.write_text('{"content": "half a save')  # a crash mid-save in some editor
        wait(browser, lambda d: api(server, "GET", "/stats")[1]["invalid_files"] == 1, "the file seen as invalid", 60)
        browser.get(server.url + "/?view=health")
        link = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#invalid a[data-view=memory]"),
                    "the invalid file's row with its last good version")
        assert path.name in browser.find_element(By.ID, "invalid").text
        link.click()
        content = wait(browser, lambda d: d.find_element(By.ID, "content"), "the last good version")
        assert content.text == MEMORIES[2][0]
    finally:
        path.write_bytes(good)
    wait(browser, lambda d: api(server, "GET", "/stats")[1]["invalid_files"] == 0, "the file valid again", 60)

    browser.get(server.url + "/?view=backups")
    wait(browser, lambda d: d.find_elements(By.ID, "backup-now"), "the backups screen")[0].click()
    button = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "button.verify-one"), "the new backup's row", 120)
    button.click()
    wait(browser, lambda d: "restorable" in toast_text(d), "one backup restore-tested", 120)
    assert "memories" in toast_text(browser)
