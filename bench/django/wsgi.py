"""gunicorn's entry point: `gunicorn -w 2 wsgi` with this directory on the path."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
application = get_wsgi_application()
