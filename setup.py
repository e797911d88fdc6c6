"""Build only the compiled hot path, ``engine._native``, from ``_native/``.

Everything else is declared in ``pyproject.toml``.  ``ENGINE_NO_EXTENSIONS=1`` builds a pure
Python package (the twin in ``engine/_hotpath_py.py`` is then the live implementation).
"""

import os

from setuptools import setup

ext_modules = []
if os.environ.get("ENGINE_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [
            Extension(
                "engine._native",
                sources=["_native/_native.pyx"],
                extra_compile_args=["-O3"],
            )
        ],
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=["_native"],
    )

setup(ext_modules=ext_modules)
