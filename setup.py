"""Builds spanprof's native parts: the sampler and its aggregation table; OTel's runtime context
and span processors in C.

The sampler is compiled against the running CPython's own internal headers
(``Py_BUILD_CORE``), because it reads frame chains and thread states directly;
the runtime context and the span processors' base use the public C API only.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "spanprof._sampler",
            sources=["src/spanprof/_sampler.c"],
            depends=["src/spanprof/_hash.h", "src/spanprof/_pending.h", "src/spanprof/_window.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-field-initializers"],
        ),
        Extension(
            "spanprof._context",
            sources=["src/spanprof/_context.c"],
            depends=["src/spanprof/_pending.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-field-initializers"],
        ),
        Extension(
            "spanprof._profile",
            sources=["src/spanprof/_profile.c"],
            depends=["src/spanprof/_hash.h", "src/spanprof/_window.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-field-initializers"],
        ),
        Extension(
            "spanprof._spans",
            sources=["src/spanprof/_spans.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-field-initializers"],
        ),
    ]
)
