#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # manage.py is the developer's tool: development mode unless DEBUG says otherwise.
    # The production processes (config/wsgi.py, Celery) default to DEBUG off, and there
    # a missing SECRET_KEY or ALLOWED_HOSTS stops start-up.
    os.environ.setdefault("DEBUG", "true")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
