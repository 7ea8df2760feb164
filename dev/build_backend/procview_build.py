"""procview's build backend: setuptools', with one fix for wheels.

setuptools copies the modules it puts into a wheel to ``build/lib`` first,
and never empties that directory: a module deleted or renamed since an
earlier build in the same checkout would still be copied into the next
wheel from there (pypa/setuptools#1871). ``pip wheel .`` and ``pip install
.`` build in the checkout itself, so on a developer's tree every wheel
would carry whatever earlier builds left. This backend forgets those
copies before each wheel; every other hook is setuptools' own.
"""

import os
import shutil

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every PEP 517 hook, unchanged)

# Where setuptools' build_py stages the modules of a wheel (relative to the
# project directory, which is the current directory of every hook).
STAGED_MODULES = os.path.join("build", "lib")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    shutil.rmtree(STAGED_MODULES, ignore_errors=True)
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
