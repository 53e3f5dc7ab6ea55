"""Running test code in another thread, on its own database connection (the
concurrency tests: a gather or a count meeting changes committed while it reads)."""

import threading

from django.db import connection


def in_thread(function):
    """Run ``function`` in another thread, on its own connection, and wait for it."""
    errors = []

    def run():
        try:
            function()
        except Exception as exc:  # pragma: no cover - re-raised below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def closing(function):
    """``function``, closing its thread's connection when it ends."""

    def run():
        try:
            function()
        finally:
            connection.close()

    return run


def run_together(*functions):
    """Run each of ``functions`` in its own thread (and connection), all at once, and
    wait for them all."""
    threads = [threading.Thread(target=closing(f)) for f in functions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
