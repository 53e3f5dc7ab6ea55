"""Tests of a data migration: the database at the migration before it, rows written
with that state's models, then migrated forward and read with the new ones."""

import contextlib

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


class Step:
    def __init__(self, before, after):
        self.after = after
        executor = MigrationExecutor(connection)
        executor.migrate([before])
        #: The models as they were at ``before``.
        self.old = executor.loader.project_state([before]).apps

    def forward(self):
        """Migrate to ``after``; return the models as they are there."""
        executor = MigrationExecutor(connection)
        executor.migrate([self.after])
        return executor.loader.project_state([self.after]).apps


@contextlib.contextmanager
def migrating(before, after):
    """Inside: the database at ``before`` (``step.old``: its models) until
    ``step.forward()``. Afterwards, back at the latest migrations, whatever happened."""
    try:
        yield Step(before, after)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
