"""Builds the one native part of spanprof: the sampler extension.

It is compiled against the running CPython's own internal headers
(``Py_BUILD_CORE``), because it reads frame chains and thread states directly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "spanprof._sampler",
            sources=["src/spanprof/_sampler.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-field-initializers"],
        )
    ]
)
