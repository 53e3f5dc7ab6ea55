"""`make loadtest`: a bounded load test of the production process set on loopback.

1. Starts a throw-away PostgreSQL and redis-server (scripts/servers.py).
2. Migrates, collects static files, seeds LOADTEST_DEALS demo deals (default 100,000)
   and recomputes every KPI.
3. Starts gunicorn (LOADTEST_WEB_WORKERS, default 3), a Celery worker and Celery beat,
   DEBUG off, as in production (no TLS on loopback: the secure-cookie and HTTPS
   redirect settings are switched off through their environment variables).
4. For LOADTEST_SECONDS (default 60), concurrently: every demo rep records leads, logs
   activities and moves deals forward through the web forms (/deals/); the managers
   open the report pages (/reports/); two clients list the API (/api/v1/deals/).
5. Prints requests per second, p50/p95/p99 latency per page and the errors (goal: 0),
   waits until the dirty sweep has caught up and checks that every KPI snapshot equals
   a full recompute (row by row, in SQL).

Exits non-zero on any request error or snapshot difference. LOADTEST_THINK (default
0.2 s) is each virtual user's pause between two actions. A quick check of the script:
LOADTEST_SECONDS=10 LOADTEST_DEALS=5000 make loadtest
"""

import html.parser
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.servers import _wait_for_port, free_port, postgres_server, redis_server  # noqa: E402

BIN = ROOT / ".venv" / "bin"
PASSWORD = "lejek-demo"  # the demo cast's password (funnel/demo.py)
REPS = ["ewa.rep", "jan.rep", "kasia.rep", "marek.rep", "ola.rep", "tomek.rep"]
MANAGERS = ["anna.manager", "piotr.manager"]
API_CLIENTS = ["admin", "anna.manager"]
REPORT_PAGES = [
    "/reports/",
    "/reports/stage/lead/",
    "/reports/stage/offer/",
    "/reports/company/",
    # The deals behind this month's lead count (the drill-down).
    "/reports/deals/?kpi=leads&side=numerator&grain=month&period=" + time.strftime("%Y-%m"),
    "/deals/list/",
]


def setting(name, default):
    return type(default)(os.environ.get(name, default))


# HTML forms ----------------------------------------------------------------------------


class FormParser(html.parser.HTMLParser):
    """The forms of a page: action -> {field: value} with the values a browser would
    submit unchanged (hidden inputs, text values, the selected or first option)."""

    def __init__(self):
        super().__init__()
        self.forms = {}
        self._form = None
        self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            if (attrs.get("method") or "get").lower() == "post":
                self._form = self.forms.setdefault(attrs.get("action") or "", {})
            else:
                self._form = {}  # a search or filter form: not submitted here
        elif self._form is None:
            return
        elif tag == "input" and attrs.get("name"):
            kind = attrs.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in attrs:
                return
            if kind not in ("submit", "button"):
                self._form[attrs["name"]] = attrs.get("value") or ""
        elif tag == "textarea" and attrs.get("name"):
            self._form[attrs["name"]] = ""
        elif tag == "select" and attrs.get("name"):
            self._select = attrs["name"]
        elif tag == "option" and self._select:
            value = attrs.get("value", "")
            if "selected" in attrs or self._select not in self._form:
                self._form[self._select] = value

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


def forms_of(page):
    parser = FormParser()
    parser.feed(page)
    return parser.forms


# Virtual users -------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = defaultdict(list)
        self.errors = defaultdict(list)

    def record(self, name, seconds, error=None):
        with self.lock:
            self.latencies[name].append(seconds)
            if error:
                self.errors[name].append(error)


def page_name(method, url):
    path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
    return f"{method} " + re.sub(r"/\d+(?=/)", "/{id}", path)


class User:
    def __init__(self, base, username, stats, stop):
        self.base, self.username, self.stats, self.stop = base, username, stats, stop
        self.session = requests.Session()
        self.random = random.Random(username)

    def request(self, method, path, *, expect=(200,), **kwargs):
        url = path if path.startswith("http") else self.base + path
        name = page_name(method, url)
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, url, allow_redirects=False, timeout=60, **kwargs
            )
        except requests.RequestException as exc:
            self.stats.record(name, time.perf_counter() - started, type(exc).__name__)
            return None
        error = None if response.status_code in expect else f"HTTP {response.status_code}"
        self.stats.record(name, time.perf_counter() - started, error)
        return response if error is None else None

    def post_form(self, page_path, action, **values):
        """Submit a form of a page as a browser would: its fields, some of them changed;
        a success answers with a redirect (a 200 is the form shown again with errors)."""
        page = self.request("GET", page_path)
        if page is None:
            return None
        fields = forms_of(page.text).get(action)
        if fields is None:
            self.stats.record(page_name("GET", page_path), 0, f"no form {action}")
            return None
        fields.update(values)
        return self.request(
            "POST",
            action or page_path,  # no action: the form posts to its own page
            data=fields,
            expect=(302,),
            headers={"Referer": self.base + page_path},
        )

    def sign_in(self):
        response = self.post_form(
            "/accounts/login/", "/accounts/login/", username=self.username, password=PASSWORD
        )
        if response is None:
            raise RuntimeError(f"{self.username} cannot sign in")

    def think(self):
        self.stop.wait(self.random.uniform(0.5, 1.5) * setting("LOADTEST_THINK", 0.2))

    def run(self):
        while not self.stop.is_set():
            self.act()
            self.think()


class Rep(User):
    """Records a lead, logs a call on it, qualifies it; moves an earlier lead to needs."""

    def __init__(self, *args):
        super().__init__(*args)
        self.qualified = []
        self.n = 0

    def act(self):
        self.n += 1
        created = self.post_form(
            "/deals/new/",
            "",
            title=f"Load test lead {self.username} {self.n}",
            company_name=f"Load test company {self.username} {self.n % 50}",
            estimated_value=str(self.random.randrange(1000, 90000)),
        )
        if created is None:
            return
        deal = created.headers["Location"].split("#")[0]
        self.think()
        self.post_form(deal, f"{deal}activities/", kind="call", outcome="Interested")
        self.think()
        if self.post_form(deal, f"{deal}move/", to_stage="qualification") is not None:
            self.qualified.append(deal)
        if len(self.qualified) > 1:
            earlier = self.qualified.pop(0)
            self.think()
            self.post_form(earlier, f"{earlier}move/", to_stage="needs")
        self.think()
        self.request("GET", "/deals/")


class Manager(User):
    def act(self):
        self.request("GET", self.random.choice(REPORT_PAGES))


class ApiClient(User):
    def act(self):
        self.request(
            "GET",
            f"/api/v1/deals/?page={self.random.randrange(1, 20)}",
            headers={"Accept": "application/json"},
        )


def run_load(base, seconds):
    stats, stop = Stats(), threading.Event()
    users = [Rep(base, name, stats, stop) for name in REPS]
    users += [Manager(base, name, stats, stop) for name in MANAGERS]
    users += [ApiClient(base, name, stats, stop) for name in API_CLIENTS]
    failures = []

    def run(user):
        try:
            user.run()
        except Exception as exc:
            failures.append(f"{user.username}: {exc!r}")
            stats.record("virtual user", 0, repr(exc))

    # Everybody signs in first (a deliberately slow password hash): not in the window.
    signing_in = Stats()

    def sign_in(user):
        user.stats = signing_in
        try:
            user.sign_in()
        except Exception as exc:
            failures.append(f"{user.username}: {exc!r}")
        user.stats = stats

    threads = [threading.Thread(target=sign_in, args=(u,), daemon=True) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    if failures:
        raise RuntimeError(f"signing in failed: {failures}")
    threads = [threading.Thread(target=run, args=(u,), daemon=True) for u in users]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(90)
    return stats, time.perf_counter() - started, len(users), failures


def percentile(values, pct):
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def report(stats, elapsed, users):
    total = sum(len(v) for v in stats.latencies.values())
    errors = sum(len(v) for v in stats.errors.values())
    print(f"\nLoad: {users} virtual users for {elapsed:.0f} s")
    print(f"{'page':44} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name in sorted(stats.latencies):
        values = stats.latencies[name]
        print(
            f"{name:44} {len(values):8} {percentile(values, 50) * 1000:8.0f} "
            f"{percentile(values, 95) * 1000:8.0f} {percentile(values, 99) * 1000:8.0f} "
            f"{len(stats.errors.get(name, [])):6}"
        )
    print(f"total: {total} requests, {total / elapsed:.1f} requests/s, {errors} errors")
    for name, errs in sorted(stats.errors.items()):
        print(f"  errors of {name}: {sorted(set(errs))[:5]}")
    return errors


# Processes -----------------------------------------------------------------------------


def manage(env, *args):
    print("$ manage.py", " ".join(args), flush=True)
    subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, check=True)


def start(name, args, env, logs):
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    proc.log.close()


def wait_for_sweep(timeout):
    from kpis import dirty

    started = time.perf_counter()
    while dirty.pending():
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(1)
    return time.perf_counter() - started


def snapshot_differences():
    """Rows of the store that a full recompute removes, adds or changes (0, 0 means the
    store already equals a full recompute)."""
    from django.db import connection

    from kpis import recompute
    from kpis.models import KpiSnapshot

    table = KpiSnapshot._meta.db_table
    columns = "kpi, grain, period_start, slice, breakdown, value, numerator, denominator"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS loadtest_swept")
        cursor.execute(f"CREATE TABLE loadtest_swept AS SELECT {columns} FROM {table}")
    started = time.perf_counter()
    recompute.recompute_all()
    full_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT {columns} FROM loadtest_swept "
            f"EXCEPT SELECT {columns} FROM {table}) AS stale"
        )
        stale = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT count(*) FROM (SELECT {columns} FROM {table} "
            f"EXCEPT SELECT {columns} FROM loadtest_swept) AS missing"
        )
        missing = cursor.fetchone()[0]
        cursor.execute(f"SELECT count(*) FROM {table}")
        rows = cursor.fetchone()[0]
        if stale or missing:
            # Which KPIs the sweep left different, and a few rows: stored, then full.
            cursor.execute(
                f"SELECT kpi, grain, count(*) FROM (SELECT {columns} FROM loadtest_swept "
                f"EXCEPT SELECT {columns} FROM {table}) AS stale GROUP BY 1, 2 ORDER BY 3 DESC"
            )
            print("stale rows by KPI and grain:", cursor.fetchall()[:20])
            cursor.execute(
                f"SELECT s.kpi, s.grain, s.period_start, s.slice, s.breakdown, "
                f"s.value, f.value, s.numerator, f.numerator, s.denominator, f.denominator "
                f"FROM loadtest_swept s JOIN {table} f USING (kpi, grain, period_start, slice, "
                f"breakdown) WHERE (s.value, s.numerator, s.denominator) IS DISTINCT FROM "
                f"(f.value, f.numerator, f.denominator) ORDER BY s.period_start DESC LIMIT 8"
            )
            for row in cursor.fetchall():
                print("  stored vs full:", row)
    return stale, missing, rows, full_seconds


def main():
    seconds = setting("LOADTEST_SECONDS", 60)
    deals = setting("LOADTEST_DEALS", 100000)
    web_workers = setting("LOADTEST_WEB_WORKERS", 3)
    sweep_timeout = setting("LOADTEST_SWEEP_TIMEOUT", 1800)
    var = Path(tempfile.mkdtemp(prefix="lejek-loadtest-"))
    logs = var / "logs"
    logs.mkdir()
    processes = []
    with postgres_server() as database_url, redis_server() as redis:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "DEBUG": "false",
            "SECRET_KEY": "loadtest-" + os.urandom(24).hex(),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "LEJEK_VAR_DIR": str(var),
            "LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        try:
            manage(env, "migrate", "--noinput", "-v0")
            manage(env, "collectstatic", "--noinput", "-v0")
            t = time.perf_counter()
            manage(env, "seed_demo", "--deals", str(deals), "--seed", "1", "-v0")
            seed_s = time.perf_counter() - t
            t = time.perf_counter()
            manage(env, "recompute_kpis", "--full")
            recompute_s = time.perf_counter() - t
            print(f"seed: {seed_s:.1f} s; full recompute: {recompute_s:.1f} s", flush=True)

            processes.append(
                start(
                    "gunicorn",
                    [
                        str(BIN / "gunicorn"),
                        "config.wsgi",
                        f"--bind=127.0.0.1:{port}",
                        f"--workers={web_workers}",
                        "--timeout=60",
                    ],
                    env,
                    logs,
                )
            )
            celery = [str(BIN / "celery"), "-A", "config"]
            processes.append(
                start("worker", [*celery, "worker", "--concurrency=1", "-l", "WARNING"], env, logs)
            )
            processes.append(start("beat", [*celery, "beat", "-l", "WARNING"], env, logs))
            _wait_for_port(port, timeout=60, proc=processes[0])
            base = f"http://127.0.0.1:{port}"
            requests.get(f"{base}/healthz", timeout=60).raise_for_status()

            stats, elapsed, users, failures = run_load(base, seconds)
            errors = report(stats, elapsed, users)
            for failure in failures:
                print("virtual user stopped:", failure)

            import django

            os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
            django.setup()
            print("\nwaiting for the dirty sweep (beat: every 60 s)...", flush=True)
            swept = wait_for_sweep(sweep_timeout)
            for proc in processes:
                stop(proc)
            if swept is None:
                print(f"the sweep did not catch up within {sweep_timeout} s")
                return 1
            print(f"sweep caught up {swept:.0f} s after the load ended")
            stale, missing, rows, full_s = snapshot_differences()
            print(
                f"snapshots vs a full recompute ({full_s:.0f} s, {rows:,} rows): "
                f"{stale} stale or extra rows, {missing} missing rows"
            )
            return 0 if errors == 0 and stale == missing == 0 else 1
        except BaseException:
            for name in ("gunicorn", "worker", "beat"):
                path = logs / f"{name}.log"
                if path.exists():
                    print(f"--- tail of {path}:\n{path.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            for proc in processes:
                stop(proc)
            shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
