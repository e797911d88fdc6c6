"""``python -m engine``: ``run`` an app file, ``top`` (a live view), ``plugins`` (what is
installed). The commands are thin: they load an app file through ``engine.environment`` and
drive ``open_runtime``; a bad file or argument is reported with exit code 2, one line per
problem and every problem of the file at once (schema, cross references, machine imports,
plugins and their configs), never as a traceback."""

from ._main import main as main
