"""The compiled kernels; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "normpen.linear.solvers._sweeps",
            ["src/normpen/linear/solvers/_sweeps.pyx"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "normpen.linear.solvers._coordinate_solve",
            ["src/normpen/linear/solvers/_coordinate_solve.pyx"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "normpen.linear.solvers._gaussian_path",
            ["src/normpen/linear/solvers/_gaussian_path.pyx"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "normpen.linear.solvers._dual_sweeps",
            ["src/normpen/linear/solvers/_dual_sweeps.pyx"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "normpen.torch._norm_kernels",
            ["src/normpen/torch/_norm_kernels.pyx"],
            depends=["src/normpen/torch/_norm_kernels.h"],
            extra_compile_args=["-O3"],
        ),
    ]
)
