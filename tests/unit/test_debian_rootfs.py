"""The pure parts of the test images' Debian root file system
(tests/integration/debian_rootfs.py): dpkg's status file and the
dependency closure, on fixture text in dpkg's own syntax."""

import pytest

from integration.debian_rootfs import _relation_names, dependency_closure, installed_packages

STATUS = """\
Package: procps
Status: install ok installed
Priority: important
Depends: libc6 (>= 2.34), libproc2-0 (>= 2:4.0.2), init-system-helpers (>= 1.29~)
Pre-Depends: libtinfo6
Description: /proc file system utilities
 This package provides command line and full screen utilities
 for browsing procfs.

Package: libc6
Status: install ok installed
Depends: libgcc-s1

Package: libgcc-s1
Status: install ok installed
Depends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)

Package: gcc-12-base
Status: install ok installed

Package: libproc2-0
Status: install ok installed
Depends: libc6 (>= 2.34), libsystemd0 (>= 209) [linux-any]

Package: libsystemd0
Status: install ok installed

Package: libtinfo6
Status: install ok installed

Package: init-system-helpers
Status: install ok installed
Depends: perl-base (>= 5.20.1-3) | perl:any

Package: perl-base
Status: deinstall ok config-files

Package: perl-fake
Status: install ok installed
Provides: perl (= 5.36.0)

Package: python3-psutil
Status: install ok installed
Depends: python3 (<< 3.12), python3:any

Package: python3
Status: install ok installed
"""


def test_relations_lose_versions_architectures_and_qualifiers():
    assert _relation_names("libc6 (>= 2.34), mawk | awk, python3:any, libsystemd0 (>= 209) [linux-any]") == (
        ("libc6",), ("mawk", "awk"), ("python3",), ("libsystemd0",))
    assert _relation_names("") == ()


def test_only_installed_packages_count_and_continuation_lines_are_read():
    packages = installed_packages(STATUS)
    assert "perl-base" not in packages  # only its config files are left
    assert packages["procps"].depends[0] == ("libtinfo6",)  # Pre-Depends first
    assert packages["perl-fake"].provides == ("perl",)


def test_the_closure_follows_depends_alternatives_and_virtual_packages():
    closure = dependency_closure(["procps"], installed_packages(STATUS))
    assert closure == sorted(["procps", "libc6", "libgcc-s1", "gcc-12-base", "libproc2-0", "libsystemd0",
                              "libtinfo6", "init-system-helpers", "perl-fake"])


def test_a_cycle_ends_and_a_package_is_listed_once():
    assert dependency_closure(["libc6", "libgcc-s1"], installed_packages(STATUS)) == ["gcc-12-base", "libc6", "libgcc-s1"]


def test_a_wanted_package_that_is_not_installed_is_named():
    with pytest.raises(LookupError, match="not installed: perl-base"):
        dependency_closure(["perl-base"], installed_packages(STATUS))


def test_an_unsatisfied_dependency_is_named():
    packages = installed_packages(STATUS.replace("Package: python3\n", "Package: python3-not\n"))
    with pytest.raises(LookupError, match="python3"):
        dependency_closure(["python3-psutil"], packages)
