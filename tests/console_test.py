#!/usr/bin/env python3
"""The web console (http/console/) in headless Chromium, against a real kvmeshd.

Drives the pages as a user would and checks the results with the kvmesh CLI: a database
created through the form is listed by `kvmesh dbs`; a regex config with a bad pattern shows
the server's error and creates nothing; a key put through the key browser reads back with
`kvmesh get`; a binary value shows as hex; deletes ask first. Then, on an HTTPS node with an
ACL, the console logs in with bearer tokens and shows a read-only principal no edit buttons.
Every step saves a screenshot to --screenshots.

Exits 77 (ctest SKIP_RETURN_CODE) only when Chromium, its driver or Selenium is absent.
"""
import argparse
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    print("SKIP: python3-selenium is not installed")
    sys.exit(SKIP)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
if not CHROMIUM or not DRIVER:
    print("SKIP: chromium or chromium-driver is not installed")
    sys.exit(SKIP)

args = argparse.ArgumentParser()
args.add_argument("--kvmeshd", required=True)
args.add_argument("--cli", required=True)
args.add_argument("--screenshots", required=True)
opts = args.parse_args()
# Only this run's screenshots: an older run's (numbered differently) would mislead a reviewer.
shutil.rmtree(opts.screenshots, ignore_errors=True)
os.makedirs(opts.screenshots, exist_ok=True)

FILE_CONFIG = """
- id: logs
  description: from the node's YAML file
  matcher: /logs/*
  replication: {min: 1, max: 1}
  size: 10MB
"""

processes = []
step_no = [0]


def fail(message):
    print("FAIL: " + message)
    raise SystemExit(1)


def check(condition, message):
    if not condition:
        fail(message)


def start_node(tmp, name, extra):
    """Starts kvmeshd; returns (process, client port, HTTP base URL)."""
    data = os.path.join(tmp, name)
    configs = os.path.join(tmp, name + "-configs")
    os.makedirs(configs)
    with open(os.path.join(configs, "logs.yaml"), "w") as f:
        f.write(FILE_CONFIG)
    out = open(os.path.join(tmp, name + ".log"), "w+")
    p = subprocess.Popen([opts.kvmeshd, "--name", name, "--data-dir", data, "--config-dir", configs,
                          "--port", "0", "--http-port", "0"] + extra,
                         stdout=out, stderr=subprocess.STDOUT)
    processes.append(p)
    deadline = time.time() + 20
    while time.time() < deadline:
        out.seek(0)
        text = out.read()
        m = re.search(r"listening on [\d.]+:(\d+).*HTTP API (https?://[\d.]+:\d+)", text)
        if m:
            return p, int(m.group(1)), m.group(2)
        if p.poll() is not None:
            fail("kvmeshd exited: " + text)
        time.sleep(0.1)
    fail("kvmeshd did not start in 20 s")


def cli(port, *argv, tls=()):
    return subprocess.run([opts.cli, "--node", "127.0.0.1:%d" % port, *tls, *argv],
                          capture_output=True, timeout=30)


def eventually(probe, what, timeout=10):
    """Polls probe() (bounded: `timeout` seconds, 0.1 s apart) until it returns a true value;
    a config applied through one request reaches the node's other readers asynchronously."""
    deadline = time.time() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.time() > deadline:
            fail("timed out waiting for " + what)
        time.sleep(0.1)


def api(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def shot(driver, name):
    step_no[0] += 1
    path = os.path.join(opts.screenshots, "%02d-%s.png" % (step_no[0], name))
    driver.save_screenshot(path)
    print("screenshot", path)


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1360,860", "--ignore-certificate-errors", "--force-device-scale-factor=1"]:
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.set_page_load_timeout(20)
    return d


def wait(driver, condition, what, timeout=10):
    try:
        # A page re-renders its table after a change: an element found a moment ago may be
        # replaced before it is read (stale), or gone between two lookups of one condition (a
        # row lookup giving None), so either just means "look again".
        return WebDriverWait(driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=[StaleElementReferenceException,
                                                 AttributeError]).until(condition)
    except TimeoutException:
        shot(driver, "timeout")
        banner = driver.find_elements(By.ID, "banner")
        fail("timed out waiting for " + what +
             (" (banner: %s)" % banner[0].text if banner and banner[0].is_displayed() else ""))


def css(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector)


def fill(driver, element_id, text):
    e = driver.find_element(By.ID, element_id)
    e.send_keys(Keys.CONTROL, "a")
    e.send_keys(Keys.DELETE)
    e.send_keys(text)


def config_row(driver, config_id):
    rows = driver.find_elements(By.CSS_SELECTOR, '#configs tr[data-id="%s"]' % config_id)
    return rows[0] if rows else None


def plaintext_flow(tmp, d):
    _, port, base = start_node(tmp, "n1", [])
    d.get(base + "/")
    wait(d, lambda d: config_row(d, "logs"), "the file config in the databases list")
    check("file" in config_row(d, "logs").text or "logs.yaml" in config_row(d, "logs").text,
          "the file config shows where it comes from")
    shot(d, "databases")

    # Create /example/kv through the form, as the reference console does.
    css(d, "#new-config").click()
    wait(d, EC.visibility_of_element_located((By.ID, "config-dialog")), "the form")
    fill(d, "cfg-id", "example_kv_store")
    fill(d, "cfg-description", "the reference app's store")
    fill(d, "cfg-tags", "example, demo")
    fill(d, "cfg-matcher", "/example/kv")
    fill(d, "cfg-min", "1")
    fill(d, "cfg-max", "2")
    fill(d, "cfg-size", "100MB")
    wait(d, lambda d: "Valid" in css(d, "#cfg-check").text, "the server's validator to accept it")
    check(css(d, "#cfg-kind").text == "literal", "the matcher shows its kind")
    shot(d, "create-form")
    css(d, "#cfg-save").click()
    wait(d, lambda d: config_row(d, "example_kv_store"), "the new config in the list")
    row = config_row(d, "example_kv_store").text
    check("/example/kv" in row and "100 MB" in row, "the list shows matcher and size: " + row)
    shot(d, "created")
    def dbs_lists_it():
        out = cli(port, "dbs")
        return out.returncode == 0 and b"example_kv_store" in out.stdout and b"/example/kv" in out.stdout
    eventually(dbs_lists_it, "kvmesh dbs to list the new config")

    # A regex with a bad pattern: the server's error, and nothing created.
    css(d, "#new-config").click()
    wait(d, EC.visibility_of_element_located((By.ID, "config-dialog")), "the form")
    fill(d, "cfg-id", "bad_logs")
    fill(d, "cfg-matcher", "/logs/([0-9]+")
    fill(d, "cfg-size", "1MB")
    wait(d, lambda d: "error" in css(d, "#cfg-check").get_attribute("class")
         and css(d, "#cfg-check").text, "the validator's error as I type")
    check(css(d, "#cfg-kind").text == "regex", "the matcher shows regex")
    css(d, "#cfg-save").click()
    wait(d, lambda d: "error" in css(d, "#cfg-check").get_attribute("class")
         and "regex" in css(d, "#cfg-check").text.lower(), "the push's error")
    error = css(d, "#cfg-check").text
    shot(d, "bad-regex")
    css(d, "#cfg-cancel").click()
    check(not any(c["id"] == "bad_logs" for c in api(base, "/v1/configs")),
          "a refused config is not created")
    out = cli(port, "dbs")
    check(b"bad_logs" not in out.stdout, "kvmesh dbs does not list the refused config")
    print("bad regex error shown:", error)

    # Edit: raise the size.
    d.find_element(By.CSS_SELECTOR, '[aria-label="Edit example_kv_store"]').click()
    wait(d, EC.visibility_of_element_located((By.ID, "config-dialog")), "the edit form")
    check(css(d, "#cfg-size").get_attribute("value") == "100MB", "the form shows the size")
    fill(d, "cfg-size", "200MB")
    css(d, "#cfg-save").click()
    wait(d, lambda d: config_row(d, "example_kv_store") and
         "200 MB" in config_row(d, "example_kv_store").text, "the raised size")
    check(api(base, "/v1/configs/example_kv_store")["size_bytes"] == 200_000_000, "size saved")

    # Keys: put through the browser, read back with the CLI.
    d.get(base + "/#/keys?db=%2Fexample%2Fkv")
    wait(d, EC.presence_of_element_located((By.ID, "put-form")), "the put form")
    fill(d, "new-key", "/users/alice")
    css(d, "#new-value").send_keys('{"name": "Alice", "plan": "pro"}')
    css(d, "#put-submit").click()
    wait(d, lambda d: d.find_elements(By.ID, "value-view") and
         css(d, "#value-view").get_attribute("data-mode") == "json", "the stored value as JSON")
    shot(d, "key-json")
    out = cli(port, "get", "/example/kv", "/users/alice")
    check(out.returncode == 0 and out.stdout == b'{"name": "Alice", "plan": "pro"}',
          "kvmesh get reads what the console put: %r" % out.stdout)

    # Upload a binary file as a value: it reads back byte for byte and shows as hex.
    blob = bytes([0, 1, 2, 0xff, 0xfe, 0x80]) + b"kvmesh" + bytes(range(16))
    blob_path = os.path.join(tmp, "blob.bin")
    with open(blob_path, "wb") as f:
        f.write(blob)
    d.get(base + "/#/keys?db=%2Fexample%2Fkv&prefix=%2Fbin%2F")
    wait(d, EC.presence_of_element_located((By.ID, "put-form")), "the put form")
    fill(d, "new-key", "/bin/blob")
    css(d, "#new-file").send_keys(blob_path)
    css(d, "#put-submit").click()
    wait(d, lambda d: d.find_elements(By.ID, "value-view") and
         css(d, "#value-view").get_attribute("data-mode") == "hex", "the binary value as hex")
    check("00 01 02 ff fe 80" in css(d, "#value-view").text, "the hex dump shows the bytes")
    shot(d, "key-binary-hex")
    out = cli(port, "get", "/example/kv", "/bin/blob")
    check(out.returncode == 0 and out.stdout == blob, "the upload reads back byte for byte")

    # The folder view at the root: users/ and bin/ as folders.
    d.get(base + "/#/keys?db=%2Fexample%2Fkv")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#keys a.folder")) == 2, "two folders")
    shot(d, "key-folders")
    d.find_element(By.LINK_TEXT, "users/").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#keys a[data-key="/users/alice"]'), "alice")
    css(d, '#keys a[data-key="/users/alice"]').click()
    wait(d, EC.presence_of_element_located((By.ID, "delete-key")), "the value's actions")

    # Delete asks first; Cancel keeps the key, Delete removes it.
    css(d, "#delete-key").click()
    wait(d, EC.visibility_of_element_located((By.ID, "confirm-dialog")), "the confirmation")
    shot(d, "confirm-delete")
    css(d, "#confirm-cancel").click()
    check(cli(port, "get", "/example/kv", "/users/alice").returncode == 0, "Cancel keeps the key")
    css(d, "#delete-key").click()
    wait(d, EC.visibility_of_element_located((By.ID, "confirm-dialog")), "the confirmation")
    css(d, "#confirm-ok").click()
    wait(d, lambda d: "Deleted /users/alice" in css(d, "#banner").text, "the delete's note")
    check(cli(port, "get", "/example/kv", "/users/alice").returncode == 1, "the key is gone")

    # Instances and the cluster view.
    d.get(base + "/#/instances")
    wait(d, lambda d: "/example/kv" in css(d, "#instances").text and
         "/ 200 MB" in css(d, "#instances").text, "instance stats with the raised limit")
    shot(d, "instances")
    # One config's instances come in the server's pages, with keys, usage and last access.
    d.get(base + "/#/instances?config=example_kv_store")
    wait(d, lambda d: "/example/kv" in css(d, "#instances").text and
         "Last access" in css(d, "#instances").text and
         "/ 200 MB" in css(d, "#instances").text, "one config's instances, paged by the server")
    shot(d, "config-instances")
    cli(port, "put", "/example/kv", "/k", "v")
    d.get(base + "/#/cluster")
    wait(d, lambda d: "up" in css(d, "#members").text and "/example/kv" in css(d, "#replication").text,
         "members and replication")
    time.sleep(2.2)  # one refresh, so the chart has two samples to draw
    shot(d, "cluster")

    # Delete the config through the console: it asks, then it is gone everywhere.
    d.get(base + "/#/databases")
    wait(d, lambda d: config_row(d, "example_kv_store"), "the list")
    d.find_element(By.CSS_SELECTOR, '[aria-label="Delete example_kv_store"]').click()
    wait(d, EC.visibility_of_element_located((By.ID, "confirm-dialog")), "the confirmation")
    css(d, "#confirm-ok").click()
    wait(d, lambda d: not config_row(d, "example_kv_store"), "the config to leave the list")
    # Its instance keeps its data (deleting a config stops new opens); the config is gone.
    eventually(lambda: all(c["id"] != "example_kv_store"
                           for c in json.loads(cli(port, "--json", "dbs").stdout)["configs"]),
               "kvmesh dbs to stop listing the deleted config")
    check(config_row(d, "logs").find_elements(By.TAG_NAME, "button") == [],
          "a file config has no edit or delete buttons")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_flow(tmp, d):
    """Two clustered nodes: the cluster page shows each member's placement; an admin drains one
    (the console asks first), sees it drained (also per kvmesh members), and undrains it."""
    seed_port = free_port()
    _, port, base = start_node(tmp, "c1", ["--cluster-port", str(seed_port)])
    start_node(tmp, "c2", ["--cluster-port", str(free_port()),
                           "--seeds", "127.0.0.1:%d" % seed_port])
    members = eventually(lambda: (lambda ms: ms if len(ms) == 2 and all(m["alive"] for m in ms)
                                  else None)(api(base, "/v1/members")), "both members alive", 20)
    other = [m["node_id"] for m in members if not m["self"]][0]
    d.get(base + "/#/cluster")

    def row_text(d):
        rows = d.find_elements(By.CSS_SELECTOR, '#members tr[data-node="%s"]' % other)
        return rows[0].text if rows else ""

    wait(d, lambda d: "active" in row_text(d), "the other member as active")
    d.find_element(By.CSS_SELECTOR, '[aria-label="Drain %s"]' % other).click()
    wait(d, EC.visibility_of_element_located((By.ID, "confirm-dialog")), "the drain confirmation")
    shot(d, "confirm-drain")
    css(d, "#confirm-ok").click()
    wait(d, lambda d: "drained" in row_text(d) and "handed over" in row_text(d), "the drained member",
         timeout=20)
    shot(d, "cluster-drained")
    placement = lambda: [m["placement"] for m in json.loads(
        cli(port, "--json", "members").stdout) if m["node"] == other]
    check(placement() == ["drained"], "kvmesh members shows the drain: %r" % placement())
    d.find_element(By.CSS_SELECTOR, '[aria-label="Undrain %s"]' % other).click()
    wait(d, lambda d: "active" in row_text(d) and "drained" not in row_text(d),
         "the member active again", timeout=20)
    check(placement() == ["active"], "kvmesh members shows it active: %r" % placement())


def token_flow(tmp, d):
    """HTTPS with an ACL: bearer-token login, and a read-only principal sees no edit buttons."""
    pki = os.path.join(tmp, "pki")
    os.makedirs(pki)
    for argv in (["cert", "ca", "--dir", pki], ["cert", "node", "n2", "--host", "127.0.0.1", "--dir", pki]):
        r = subprocess.run([opts.cli, *argv], capture_output=True, timeout=30)
        check(r.returncode == 0, "kvmesh %s: %r" % (argv, r.stderr))
    tokens = {}
    lines = []
    for principal in ("ops", "viewer"):
        r = subprocess.run([opts.cli, "token", "new", "--principal", principal],
                           capture_output=True, timeout=30, text=True)
        check(r.returncode == 0, "kvmesh token new: " + r.stderr)
        tokens[principal] = re.search(r"kvmesh_[0-9a-f]{64}", r.stdout).group(0)
        lines.append(re.search(r"^  - (\{.*\})$", r.stdout, re.M).group(1))
    acl = os.path.join(tmp, "acl.yaml")
    with open(acl, "w") as f:
        f.write("principals:\n  ops: [{role: admin}]\n  viewer: [{role: readonly}]\ntokens:\n")
        f.writelines("  - %s\n" % line for line in lines)
    _, _, base = start_node(tmp, "n2", [
        "--tls-ca", os.path.join(pki, "ca.crt"), "--tls-cert", os.path.join(pki, "node-n2.crt"),
        "--tls-key", os.path.join(pki, "node-n2.key"), "--acl", acl])
    check(base.startswith("https://"), "the HTTP API is HTTPS: " + base)

    # Without credentials the API answers 401 and the console asks for a token.
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    try:
        urllib.request.urlopen(base + "/v1/configs", context=ctx, timeout=10)
        fail("served /v1/configs without credentials")
    except urllib.error.HTTPError as e:
        check(e.code == 401, "401 without credentials, got %d" % e.code)
    d.get(base + "/")
    wait(d, EC.visibility_of_element_located((By.ID, "login-token")), "the login form")
    css(d, "#login-token").send_keys("kvmesh_" + "0" * 64)
    css(d, "#login-submit").click()
    wait(d, lambda d: "not in the ACL file" in css(d, "#login-message").text, "a wrong token refused")
    shot(d, "login-refused")

    fill(d, "login-token", tokens["viewer"])
    css(d, "#login-submit").click()
    wait(d, lambda d: config_row(d, "logs"), "the databases list as viewer")
    check("viewer" in css(d, "#who").text, "the header names the principal")
    check(not d.find_elements(By.ID, "new-config"), "a read-only principal has no + button")
    shot(d, "readonly")
    d.get(base + "/#/keys?db=%2Flogs%2Fa")
    wait(d, lambda d: "Read only" in css(d, "#key-panel").text, "the read-only key panel")
    check(not d.find_elements(By.ID, "put-form"), "no put form for a read-only principal")

    css(d, "#logout").click()
    wait(d, EC.visibility_of_element_located((By.ID, "login-token")), "the login form again")
    css(d, "#login-token").send_keys(tokens["ops"])
    css(d, "#login-submit").click()
    # Back on the page it was on, now with the admin's rights.
    wait(d, EC.presence_of_element_located((By.ID, "put-form")), "the put form for an admin")
    d.get(base + "/#/databases")
    wait(d, EC.presence_of_element_located((By.ID, "new-config")), "the + button for an admin")
    shot(d, "admin")


def main():
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="kvmesh-console-")
    d = None
    try:
        d = browser()
        plaintext_flow(tmp, d)
        cluster_flow(tmp, d)
        token_flow(tmp, d)
        print("OK in %.1f s" % (time.time() - started))
    finally:
        if d is not None:
            d.quit()
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
