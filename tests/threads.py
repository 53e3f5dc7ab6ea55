"""Running test code in another thread, on its own database connection (the
concurrency tests: a gather or a count meeting changes committed while it reads)."""

import threading
import time

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


class Interleaving:
    """Two threads forced into one order, and the order they ran in: a reader held
    once it has read (``held``) until the other thread starts (``then``), with time
    enough for that thread to finish if nothing makes it wait; ``noted`` records when
    a step ends."""

    def __init__(self):
        self.order = []
        self._read, self._go_on = threading.Event(), threading.Event()

    def held(self, function, label):
        def run(*args, **kwargs):
            result = function(*args, **kwargs)
            self._read.set()
            self._go_on.wait(30)
            time.sleep(0.5)  # time enough for a step that did not wait to finish
            self.order.append(label)
            return result

        return run

    def noted(self, function, label):
        def run(*args, **kwargs):
            result = function(*args, **kwargs)
            self.order.append(label)
            return result

        return run

    def then(self, function, label):
        def run():
            self._read.wait(30)
            self._go_on.set()
            function()
            self.order.append(label)

        return run
