"""The request log: one line per request with its id, user, method, path, status and
duration; the id is honoured from X-Request-ID or generated, and echoed back."""

import logging
import re

import pytest

pytestmark = pytest.mark.django_db

LINE = re.compile(
    r"^request_id=(?P<id>\S+) user=(?P<user>\S+) method=(?P<method>[A-Z]+) "
    r"path=(?P<path>\S+) status=(?P<status>\d{3}) duration_ms=(?P<ms>\d+\.\d)$"
)


def request_lines(caplog):
    return [r for r in caplog.records if r.name == "lejek.request"]


def test_one_line_per_request_with_the_callers_request_id(client, rep, caplog):
    client.force_login(rep)
    with caplog.at_level(logging.INFO, logger="lejek.request"):
        response = client.get("/", headers={"X-Request-ID": "lb-7f3a.42"})

    assert response["X-Request-ID"] == "lb-7f3a.42"
    [record] = request_lines(caplog)
    line = LINE.match(record.getMessage())
    assert line is not None, record.getMessage()
    assert line.group("id", "user", "method", "path", "status") == (
        "lb-7f3a.42",
        str(rep.pk),
        "GET",
        "/",
        "200",
    )
    assert float(line.group("ms")) > 0
    # The same fields, structured, for a JSON formatter.
    assert (record.request_id, record.user_id, record.status) == ("lb-7f3a.42", str(rep.pk), 200)


def test_an_id_is_generated_when_none_is_sent(client, caplog):
    with caplog.at_level(logging.INFO, logger="lejek.request"):
        first = client.get("/accounts/login/")
        second = client.get("/accounts/login/")

    ids = [first["X-Request-ID"], second["X-Request-ID"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]
    lines = [LINE.match(r.getMessage()) for r in request_lines(caplog)]
    assert [(m.group("id"), m.group("user"), m.group("status")) for m in lines] == [
        (ids[0], "-", "200"),
        (ids[1], "-", "200"),
    ]


@pytest.mark.parametrize("sent", ["", "two words", "x" * 129, "id\nrequest_id=forged", "<script>"])
def test_an_id_that_could_break_the_log_is_replaced(client, sent, caplog):
    with caplog.at_level(logging.INFO, logger="lejek.request"):
        response = client.get("/accounts/login/", headers={"X-Request-ID": sent})

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    [record] = request_lines(caplog)
    assert LINE.match(record.getMessage()).group("id") == response["X-Request-ID"]


def test_redirects_refusals_and_odd_paths_are_logged_too(client, rep, caplog):
    with caplog.at_level(logging.INFO, logger="lejek.request"):
        client.get("/")  # anonymous: to the login page
        client.force_login(rep)
        client.get("/no-such-page/a%20b%0Ac")  # a newline, decoded into request.path

    lines = [LINE.match(r.getMessage()) for r in request_lines(caplog)]
    assert [(m.group("user"), m.group("path"), m.group("status")) for m in lines] == [
        ("-", "/", "302"),
        (str(rep.pk), "/no-such-page/a%20b%0Ac", "404"),
    ]


def test_other_log_lines_of_a_request_carry_its_id(client, caplog, settings):
    """The console handler's filter stamps every record with the current request id."""
    from config.middleware import RequestIdFilter

    seen = []

    class Probe(logging.Handler):
        def emit(self, record):
            seen.append((record.name, record.request_id))

    probe = Probe()
    probe.addFilter(RequestIdFilter())
    logger = logging.getLogger("axes")
    logger.addHandler(probe)
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        client.post(
            "/accounts/login/",
            {"username": "nobody", "password": "wrong"},
            headers={"X-Request-ID": "req-1"},
        )
    finally:
        logger.removeHandler(probe)
        logger.setLevel(old_level)
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    RequestIdFilter().filter(outside)

    assert seen and all(rid == "req-1" for _, rid in seen)
    assert outside.request_id == "-"
