"""One distribution, ``dmtl``: the repository's top-level ``models/`` and ``preprocessing/`` folders install as
``dmtl.models`` and ``dmtl.preprocessing``, so nothing but ``dmtl`` lands in site-packages."""
from setuptools import find_packages, setup

NESTED = {"dmtl.models": "models", "dmtl.preprocessing": "preprocessing"}  # package -> folder in the repository

packages = find_packages(include=["dmtl", "dmtl.*"])
for package, folder in NESTED.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=NESTED)
