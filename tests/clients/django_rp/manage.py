#!/usr/bin/env python
"""The relying party's manage.py (tests/clients/test_oidc.py runs `migrate` and `runserver`)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rp.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
