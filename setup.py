"""Build only the compiled hot path, ``engine._native``, from ``_native/``.

Everything else is declared in ``pyproject.toml``.  ``ENGINE_NO_EXTENSIONS=1`` builds a pure
Python package (the twin in ``engine/hotpath/_python.py`` is then the live implementation).

The sources are the Cython ones (``_native/*.pyx``, the ``.pxi`` pieces it includes and
``bigmem.h``), shipped in the sdist by ``MANIFEST.in``; the C file is generated at build time
by the Cython from ``[build-system] requires``, never shipped, so it cannot go stale.
Cythonizing happens in ``build_ext`` only: ``sdist`` needs no Cython and writes no ``.c``.
"""

import os
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILER_DIRECTIVES = {
    "language_level": "3",
    "embedsignature": True,
    "cdivision": True,
    "initializedcheck": False,
}


class cythonize_build_ext(build_ext):  # noqa: N801 - named like the command it replaces
    """``build_ext`` that turns the ``.pyx`` sources into C first, with our directives."""

    def finalize_options(self) -> None:
        from Cython.Build import cythonize

        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules,
            compiler_directives=COMPILER_DIRECTIVES,
            include_path=["_native"],
            force=self.force,
        )
        super().finalize_options()


ext_modules = []
if os.environ.get("ENGINE_NO_EXTENSIONS", "") in ("", "0"):
    ext_modules.append(
        Extension(
            "engine._native",
            sources=["_native/_native.pyx"],
            depends=sorted(glob("_native/*.pxi") + glob("_native/*.pxd") + glob("_native/*.h")),
            include_dirs=["_native"],
            extra_compile_args=["-O3"],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": cythonize_build_ext})
