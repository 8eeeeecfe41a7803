#!/usr/bin/env python
"""The monolith's manage.py (tests/clients/test_simplejwt.py runs `migrate`, `loaddata`,
`dumpdata`, `shell` and `runserver`)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monolith.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
