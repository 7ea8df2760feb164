"""``procview image``: import, list and remove the images of ``procview run``.

    procview image import PATH [--name NAME:TAG] [--root DIR]
    procview image ls [--root DIR]
    procview image rm NAME... [--root DIR]
    procview image export IMAGE FILE [--root DIR]
    procview pull [--platform OS/ARCH] [-q] [--insecure-registry HOST[:PORT]]... [--plain-http] [--root DIR] REF

``--root`` defaults to ``$PROCVIEW_ROOT``, else ``/var/lib/procview-runtime``.
A failure prints one line, ``procview: error: ...``, on stderr and exits 125
(Docker's code for the tool itself failing); ``procview pull`` exits 1, as
``docker pull``; bad usage exits 2 (click's).
The store is imported inside each command, so attaching the group to
``procview`` costs nothing until it is used.
"""

from __future__ import annotations

import sys
import time

import json

import click

EXIT_IMAGE_ERROR = 125
ROOT_DEFAULT = "/var/lib/procview-runtime"
# Show a progress bar once an import has run this long, or at once for an
# archive this large.
PROGRESS_AFTER_S = 0.5
PROGRESS_LARGE = 20 << 20


class ImageCommandError(click.ClickException):
    exit_code = EXIT_IMAGE_ERROR

    def show(self, file=None) -> None:
        message = " ".join(self.format_message().split())  # always one line
        click.echo(f"procview: error: {message}", err=True)


_root_option = click.option(
    "--root", envvar="PROCVIEW_ROOT", default=ROOT_DEFAULT, show_default=True,
    help="State root of procview run (also $PROCVIEW_ROOT).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def image() -> None:
    """Manage the images of procview run (busybox is built in)."""


@image.command("import")
@click.argument("path")
@click.option("--name", help="Store the image as NAME[:TAG] (default: the names in the archive, else the file name).")
@_root_option
def import_(path: str, name: str | None, root: str) -> None:
    """Import an image from PATH: a docker save archive, an OCI image layout
    (directory or tar), or a root file system tar (gzip, bzip2 or xz
    compressed archives too)."""
    from procview.runtime.images.store import ImageError, ImageStore

    bar = _ProgressBar()
    try:
        images = ImageStore(root).import_archive(path, name=name, progress=bar)
    except ImageError as exc:
        raise ImageCommandError(str(exc)) from None
    except OSError as exc:
        raise ImageCommandError(f"{path}: {exc}") from None
    finally:
        bar.close()
    for img in images:
        click.echo(f"Loaded image: {img.name} ({_short_id(img.id)})")


@image.command("ls")
@_root_option
def ls(root: str) -> None:
    """List images: NAME, ID, LAYERS, SIZE."""
    from procview.runtime.images.store import ImageError, ImageStore

    store = ImageStore(root)
    try:
        images = store.list()
    except (ImageError, OSError) as exc:
        raise ImageCommandError(str(exc)) from None
    rows = [("NAME", "ID", "LAYERS", "SIZE")]
    for img in images:
        size = sum(store.layer_size(layer) for layer in img.layers)
        rows.append((img.name, _short_id(img.id), str(len(img.layers)), human_size(size)))
    echo_table(rows)


def echo_json_each(names, describe, errors: tuple, exit_code: int = 125) -> None:
    """``inspect``'s output: a JSON array of ``describe(name)`` for every
    name; a name it raises one of ``errors`` for is one line on stderr,
    the others are still printed, and the exit status says it."""
    found, failed = [], False
    for name in names:
        try:
            found.append(describe(name))
        except errors as exc:
            click.echo(f"procview: error: {exc}", err=True)
            failed = True
    click.echo(json.dumps(found, indent=1))  # [] when none was found, as docker inspect
    if failed:
        raise SystemExit(exit_code)


def table_lines(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows (the first: the headings) in columns, as docker's lists: each
    as wide as its widest cell, three spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def echo_table(rows: list[tuple[str, ...]]) -> None:
    """Print ``table_lines(rows)``."""
    for line in table_lines(rows):
        click.echo(line)


@image.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@_root_option
def rm(names: tuple[str, ...], root: str) -> None:
    """Remove images (by NAME[:TAG] or ID), and the layers no other image uses."""
    from procview.runtime.images.store import ImageError, ImageStore

    store = ImageStore(root)
    for name in names:
        try:
            store.remove(name)
        except (ImageError, OSError) as exc:
            raise ImageCommandError(str(exc)) from None
        click.echo(f"Deleted: {name}")


@image.command("export")
@click.argument("reference", metavar="IMAGE")
@click.argument("path", metavar="FILE")
@_root_option
def export(reference: str, path: str, root: str) -> None:
    """Write IMAGE to FILE (- for standard output) as a docker save archive,
    which docker load, skopeo and procview image import read."""
    from procview.runtime.images.store import ImageError, ImageStore

    if path == "-" and sys.stdout.isatty():
        raise ImageCommandError("refusing to write an archive to a terminal: give a FILE, or redirect the output")
    try:
        ImageStore(root).export(reference, path)
    except ImageError as exc:
        raise ImageCommandError(str(exc)) from None
    except OSError as exc:
        raise ImageCommandError(f"{path}: {exc.strerror or exc}") from None


class PullError(ImageCommandError):
    exit_code = 1  # docker pull's


@click.command("pull")
@click.argument("reference", metavar="REF")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="The platform to pull from an image index (default: this machine's).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's reference.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Allow plain HTTP (and unverified HTTPS) to this registry; repeatable; also "
                   "$PROCVIEW_INSECURE_REGISTRIES. Loopback registries always are.")
@click.option("--plain-http", is_flag=True, help="Use HTTP, not HTTPS (only for the registries above).")
@_root_option
def pull(reference: str, platform: str | None, quiet: bool, insecure: tuple[str, ...], plain_http: bool, root: str) -> None:
    """Pull an image from a registry (OCI distribution API), as docker pull:
    REF is NAME[:TAG] or NAME@sha256:DIGEST (busybox is
    docker.io/library/busybox:latest)."""
    from procview.runtime.images.pull import PullOptions, Report, pull as pull_image
    from procview.runtime.images.store import ImageError, ImageStore

    options = PullOptions(platform=platform, insecure=insecure, plain_http=plain_http)
    try:
        pull_image(ImageStore(root), reference, options, Report(quiet=quiet))
    except ImageError as exc:
        raise PullError(str(exc)) from None
    except OSError as exc:
        raise PullError(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}") from None


def human_size(n: int) -> str:
    """Docker's style: decimal units, three significant digits (``4.26MB``)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 999.5 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


class _ProgressBar:
    """A ``progress`` callable for ``ImageStore.import_archive`` that shows a
    click progress bar on stderr only when the import is slow or large."""

    def __init__(self, after: float = PROGRESS_AFTER_S, large: int = PROGRESS_LARGE):
        self._start = time.monotonic()
        self._after = after
        self._large = large
        self._bar = None
        self._shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if total < self._large and time.monotonic() - self._start < self._after:
                return
            self._bar = click.progressbar(length=total, label="Importing", file=sys.stderr, show_eta=True)
            self._bar.__enter__()
        self._bar.update(done - self._shown)
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
