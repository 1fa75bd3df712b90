"""Package discovery: `bus-schemas/` is importable as `bus_schemas`; every other package is found."""

from setuptools import find_packages, setup

SERVICES = ["gateway*", "placement*", "agents*", "snapshotter*", "thaw_core*", "thaw", "thaw.*"]
packages = ["bus_schemas"] + find_packages(where=".", include=SERVICES)
setup(packages=packages)
