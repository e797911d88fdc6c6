"""``python -m engine``: ``run`` an app file, ``top`` (a live view), ``plugins`` (what is
installed). The commands are thin: they load an app file through ``engine.environment`` and
drive ``open_runtime``; a bad file is reported, field by field, with exit code 2."""

from ._main import main as main
