"""The web UI in headless Chromium, as a user meets it: one browser session
through sign-in, create, search, detail, edit, disable, delete and the
dashboard, checking what the page shows and what the API then says.

Run by tests/ui.rs, which starts shortd and passes, in the environment:
  SHORTD_URL     base URL of the running server (http://127.0.0.1:PORT)
  SHORTD_KEY     its API key
  SHORTD_CODES   comma-separated codes of links made through the API
  AXE_JS         path of axe-core's axe.min.js (npm package axe-core)
  SCREENSHOTS    optional folder for screenshots of the main pages
Exits non-zero with a message on the first thing that is not as expected.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["SHORTD_URL"].rstrip("/")
KEY = os.environ["SHORTD_KEY"]
CODES = [c for c in os.environ["SHORTD_CODES"].split(",") if c]
AXE = open(os.environ["AXE_JS"], encoding="utf-8").read()
SHOTS = os.environ.get("SCREENSHOTS")
WAIT = 15


def fail(msg):
    raise AssertionError(msg)


def api(method, path, body=None):
    """The API answer (status, parsed JSON or None), with the key."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, None


def redirect_status(code):
    class NoFollow(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoFollow)
    try:
        return opener.open(BASE + "/" + code, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


def browser():
    opts = Options()
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-extensions",
        "--dns-prefetch-disable",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
    ]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chromium = "/usr/bin/chromium"
    if os.path.exists(chromium):
        opts.binary_location = chromium
    driver_path = "/usr/bin/chromedriver"
    service = Service(driver_path) if os.path.exists(driver_path) else Service()
    return webdriver.Chrome(options=opts, service=service)


class Scenario:
    def __init__(self, d):
        self.d = d
        self.requests = []
        self.errors = []

    # ---------------------------------------------------------- helpers

    def wait(self, what, fn, timeout=WAIT):
        try:
            return WebDriverWait(self.d, timeout, ignored_exceptions=[StaleElementReferenceException]).until(lambda _: fn())
        except TimeoutException:
            self.drain()
            fail(f"timed out waiting for {what}; page text:\n{self.text()}\nconsole: {self.errors}")

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def by_label(self, label):
        """The visible form control whose <label> reads exactly `label`."""
        for lab in self.d.find_elements(By.TAG_NAME, "label"):
            if lab.text.strip() == label and lab.is_displayed():
                return self.d.find_element(By.ID, lab.get_attribute("for"))
        fail(f"no visible input labelled {label!r}; page text:\n{self.text()}")

    def button(self, name):
        """The one visible button named exactly `name`."""
        found = [b for b in self.d.find_elements(By.TAG_NAME, "button") if b.text.strip() == name and b.is_displayed()]
        if len(found) != 1:
            fail(f"expected one visible button {name!r}, found {len(found)}; page text:\n{self.text()}")
        return found[0]

    def rows(self):
        return [r.text for r in self.d.find_elements(By.CSS_SELECTOR, "#links-body tr")]

    def drain(self):
        """Moves the browser's logs into self.requests and self.errors."""
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
        for entry in self.d.get_log("browser"):
            if entry["level"] == "SEVERE":
                self.errors.append(entry["message"])

    def axe(self, page):
        self.d.execute_script(AXE)
        result = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
            "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
        )
        bad = [v for v in result if v["impact"] in ("serious", "critical")]
        if bad:
            fail(f"axe-core on the {page}: {json.dumps(bad, indent=1)}")
        print(f"axe-core on the {page}: {len(result)} minor or moderate, none serious or critical")

    def shot(self, name):
        """The whole page, not just the window, as a PNG in SHOTS."""
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)
            self.d.execute_script("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
            size = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            png = self.d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
            with open(os.path.join(SHOTS, name), "wb") as f:
                f.write(base64.b64decode(png["data"]))

    def no_horizontal_scroll(self, page):
        over = self.d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        if over > 0:
            fail(f"the {page} is {over} px wider than a 375 px window")

    # ---------------------------------------------------------- the story

    def sign_in(self):
        self.d.get(BASE + "/")
        self.wait("/ to lead to /ui/", lambda: urllib.parse.urlparse(self.d.current_url).path == "/ui/")
        self.wait("the sign-in form", lambda: self.d.find_elements(By.ID, "api-key"))
        if self.d.execute_script("return document.documentElement.lang") != "en":
            fail("the page sets no lang")
        if not self.d.title:
            fail("the page has no title")
        self.axe("sign-in page")
        self.shot("ui-sign-in.png")
        self.by_label("API key").send_keys("not-the-right-key")
        self.button("Sign in").click()
        alert = self.wait("the API's refusal", lambda: self.d.find_element(By.ID, "signin-error").text)
        if "Unauthorized" not in alert or "not a valid Bearer key" not in alert:
            fail(f"a wrong key shows {alert!r}, not the API's error")
        # The one console line a refused key may leave: the browser's own
        # note of the 401 answer. Anything else is an error of the page.
        self.drain()
        others = [e for e in self.errors if "401" not in e]
        if others:
            fail(f"console errors while refusing a wrong key: {others}")
        self.errors.clear()
        field = self.by_label("API key")
        field.clear()
        field.send_keys(KEY)
        self.button("Sign in").click()
        self.wait("the links made through the API", lambda: all(any(r.startswith(c + " ") for r in self.rows()) for c in CODES))
        if self.d.execute_script("return sessionStorage.getItem('shortd.apiKey')") != KEY:
            fail("the key is not kept in sessionStorage")
        print(f"signed in; the list shows {len(self.rows())} links")

    def create(self):
        self.by_label("URL").send_keys("https://example.org/made/in/the/browser?x=1")
        self.button("Shorten").click()
        short = self.wait("the new short URL", lambda: self.d.find_element(By.ID, "created-url").text)
        self.button("Copy")
        code = short.rsplit("/", 1)[1]
        status, link = api("GET", f"/api/v1/links/{code}")
        if status != 200 or link["url"] != "https://example.org/made/in/the/browser?x=1":
            fail(f"the link made in the form is not in the API: {status} {link}")
        self.wait("the new link at the top of the list", lambda: self.rows() and self.rows()[0].startswith(code + " "))
        self.axe("links page")
        self.shot("ui-links.png")
        print(f"created {short} through the form")
        return code

    def search(self, url_part, code):
        search = self.by_label("Search")
        search.send_keys(url_part)
        self.wait(f"the list narrowed to {code}", lambda: len(self.rows()) == 1 and self.rows()[0].startswith(code + " "))
        search.clear()
        search.send_keys(code[:4])
        self.wait(f"the code-prefix search to find {code}", lambda: self.rows() and all(r.startswith(code[:4]) for r in self.rows()))
        search.clear()
        search.send_keys(Keys.ENTER)
        self.wait("the whole list back", lambda: len(self.rows()) >= len(CODES) + 1)
        print("search narrows the list by URL part and by code prefix")

    def detail(self, code):
        def open_detail():
            for a in self.d.find_elements(By.CSS_SELECTOR, "#links-body a"):
                if a.text == code:
                    a.click()
                    return True
            return False

        self.wait(f"{code} in the list to click", open_detail)
        self.wait("the detail view", lambda: self.d.find_elements(By.ID, "d-body") and self.d.find_element(By.ID, "d-body").is_displayed())
        qr = self.wait(
            "the QR image to load",
            lambda: self.d.execute_script(
                "const i = document.getElementById('qr'); return i && i.complete && i.naturalWidth > 0 && !i.hidden ? i : null"
            ),
        )
        if not qr.get_attribute("alt").startswith("QR code for "):
            fail(f"QR image alt is {qr.get_attribute('alt')!r}")
        self.wait("a chart", lambda: self.d.find_elements(By.CSS_SELECTOR, "#chart svg, #chart canvas"))
        self.button("Daily (30 days)").click()
        self.wait("the daily chart", lambda: self.d.find_elements(By.CSS_SELECTOR, "#chart svg") and "per day" in self.d.find_element(By.CSS_SELECTOR, "#chart svg").get_attribute("aria-label"))
        for caption in ["Referrers", "Countries", "Devices", "Browsers", "Operating systems"]:
            if caption not in self.text():
                fail(f"the detail shows no {caption} breakdown")
        # The clicks made before the scenario (tests/ui.rs): 2 from Firefox
        # via news.example.com, 1 from Chrome.
        def shown():
            tables = {t.find_element(By.TAG_NAME, "caption").text: t.text for t in self.d.find_elements(By.CSS_SELECTOR, "#breakdowns table")}
            caption = self.d.find_element(By.CSS_SELECTOR, "#chart figcaption").text
            return "Firefox 2" in tables.get("Browsers", "") and "news.example.com 2" in tables.get("Referrers", "") and caption.startswith("3 clicks")

        self.wait("the 3 clicks in the chart and the breakdowns", shown)
        print(f"detail of {code}: QR image loaded, chart and breakdowns shown")

    def edit(self, code):
        url = self.by_label("URL")
        url.clear()
        url.send_keys("https://example.net/edited/in/the/ui")
        self.by_label("Max clicks").send_keys("1000")
        self.button("Save").click()
        self.wait("Saved.", lambda: self.d.find_element(By.ID, "e-status").text == "Saved.")
        status, link = api("GET", f"/api/v1/links/{code}")
        if (link or {}).get("url") != "https://example.net/edited/in/the/ui" or link.get("max_clicks") != 1000:
            fail(f"the edit did not reach the API: {status} {link}")
        print("edited URL and max clicks")

    def disable(self, code):
        self.button("Disable").click()
        self.wait("the Enable button", lambda: self.d.find_element(By.ID, "toggle").text == "Enable")
        status, link = api("GET", f"/api/v1/links/{code}")
        if not (link or {}).get("disabled"):
            fail(f"Disable did not reach the API: {status} {link}")
        if redirect_status(code) != 410:
            fail(f"a disabled link redirects: {redirect_status(code)}")
        if self.d.find_element(By.ID, "d-state").text != "disabled":
            fail("the detail does not show the link as disabled")
        self.axe("detail page")
        self.shot("ui-detail.png")
        print("disabled")

    def delete(self, code):
        self.button("Delete").click()
        self.button("Delete").click()
        self.wait("the list after the delete", lambda: urllib.parse.urlparse(self.d.current_url).fragment == "/links" and self.d.find_elements(By.ID, "links-body"))
        self.wait("the deleted link gone from the list", lambda: not any(r.startswith(code + " ") for r in self.rows()))
        status, _ = api("GET", f"/api/v1/links/{code}")
        if status != 410:
            fail(f"after Delete the API answers {status}, not 410")
        print("deleted")

    def dashboard(self):
        next(a for a in self.d.find_elements(By.CSS_SELECTOR, "nav a") if a.text == "Dashboard").click()
        self.wait("the dashboard", lambda: "Live: ok" in self.text() and "Ready: ready" in self.text())
        self.wait("the totals", lambda: self.d.find_element(By.ID, "dash-links").text.isdigit())
        self.wait("the chart of all clicks", lambda: self.d.find_elements(By.CSS_SELECTOR, "#chart svg"))
        self.axe("dashboard")
        self.shot("ui-dashboard.png")
        print("dashboard: totals, health, chart")

    def keyboard(self):
        """Tab reaches every control of the links page, in order."""
        self.d.get(BASE + "/ui/#/links")
        self.wait("the links page", lambda: self.rows())
        controls = self.d.execute_script(
            "return [...document.querySelectorAll('a[href], button, input, select')].filter(e => e.offsetParent !== null)"
        )
        self.d.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        reached = []
        for _ in range(2 * len(controls) + 5):
            ActionChains(self.d).send_keys(Keys.TAB).perform()
            reached.append(self.d.switch_to.active_element)
        missing = [c.get_attribute("outerHTML")[:80] for c in controls if c not in reached]
        if missing:
            fail(f"not reachable by Tab: {missing}")
        print(f"Tab reaches all {len(controls)} controls of the links page")

    def narrow(self):
        self.d.set_window_size(375, 800)
        self.d.get(BASE + "/ui/#/links")
        self.wait("the links page at 375 px", lambda: self.rows())
        self.no_horizontal_scroll("links page")
        self.shot("ui-links-375.png")
        self.axe("links page at 375 px")
        self.d.get(BASE + "/ui/#/links/" + CODES[1])
        self.wait("the detail at 375 px", lambda: self.d.find_elements(By.CSS_SELECTOR, "#chart svg"))
        self.no_horizontal_scroll("detail page")
        self.d.set_window_size(1280, 900)
        print("layout fits 375 px")

    def checks(self):
        self.drain()
        away = [u for u in self.requests if urllib.parse.urlparse(u).scheme not in ("data", "blob") and urllib.parse.urlparse(u).hostname != "127.0.0.1"]
        if away:
            fail(f"requests left 127.0.0.1: {away}")
        leaked = [u for u in self.requests if KEY in u]
        if leaked:
            fail(f"the key appears in a URL: {leaked}")
        if self.errors:
            fail(f"console errors: {self.errors}")
        print(f"{len(self.requests)} requests, all to 127.0.0.1, none with the key; no console error")


def main():
    d = browser()
    try:
        s = Scenario(d)
        s.sign_in()
        made = s.create()
        status, first = api("GET", f"/api/v1/links/{CODES[0]}")
        if status != 200:
            fail(f"the API lost {CODES[0]}: {status}")
        s.search(first["url"].split("//", 1)[1][-12:], CODES[0])
        s.detail(CODES[0])
        s.edit(CODES[0])
        s.disable(CODES[0])
        s.delete(CODES[0])
        s.dashboard()
        s.keyboard()
        s.narrow()
        s.checks()
        print(f"ui scenario passed (made {made})")
    finally:
        d.quit()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
