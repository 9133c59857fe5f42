"""Maps the sibling folders into the ns_compile namespace (metadata lives in pyproject.toml)."""
from setuptools import find_packages, setup

SIBLINGS = ("kernels", "sim", "backends", "partition")

packages = ["ns_compile"] + [f"ns_compile.{p}" for p in find_packages("ns_compile")]
package_dir = {"ns_compile": "ns_compile"}
for sib in SIBLINGS:
    packages.append(f"ns_compile.{sib}")
    package_dir[f"ns_compile.{sib}"] = sib
    for sub in find_packages(sib):
        packages.append(f"ns_compile.{sib}.{sub}")
        package_dir[f"ns_compile.{sib}.{sub}"] = f"{sib}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
