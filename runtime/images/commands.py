"""``procview image``: import, list and remove the images of ``procview run``.

    procview image import PATH [--name NAME:TAG] [-q] [--root DIR]
    procview image ls [--root DIR]
    procview image rm NAME... [--root DIR]
    procview image export IMAGE FILE [-q] [--root DIR]
    procview pull [--platform OS/ARCH] [-q] [--insecure-registry HOST[:PORT]]... [--plain-http] [--root DIR] REF

``import``, ``export`` and ``pull`` show their progress per layer
(``progress.py``: bars on a terminal, else a line per layer; ``-q``: only
the result). ``--root`` defaults to ``$PROCVIEW_ROOT``, else ``/var/lib/procview-runtime``.
A failure prints one line, ``procview: error: ...``, on stderr and exits 125
(Docker's code for the tool itself failing); ``procview pull`` exits 1, as
``docker pull``; bad usage exits 2 (click's).
The store is imported inside each command, so attaching the group to
``procview`` costs nothing until it is used.
"""

from __future__ import annotations

import json
import sys

import click

from procview.runtime.images.progress import human_size

EXIT_IMAGE_ERROR = 125
ROOT_DEFAULT = "/var/lib/procview-runtime"


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
@click.option("-q", "--quiet", is_flag=True, help="Print only the names of the images imported.")
@_root_option
def import_(path: str, name: str | None, quiet: bool, root: str) -> None:
    """Import an image from PATH: a docker save archive, an OCI image layout
    (directory or tar), or a root file system tar (gzip, bzip2 or xz
    compressed archives too)."""
    from procview.runtime.images.progress import Report
    from procview.runtime.images.store import ImageError, ImageStore

    with Report(quiet=quiet, action="Importing") as report:
        try:
            images = ImageStore(root).import_archive(path, name=name, report=report)
        except ImageError as exc:
            raise ImageCommandError(str(exc)) from None
        except OSError as exc:
            raise ImageCommandError(f"{path}: {exc}") from None
        for img in images:
            if quiet:
                report.result(img.name)
            else:
                report.line(f"Loaded image: {img.name} ({_short_id(img.id)})")


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


def echo_table(rows: list[tuple[str, ...]]) -> None:
    """Print rows (the first: the headings) in columns, as docker's lists:
    each as wide as its widest cell, three spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


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
@click.option("-q", "--quiet", is_flag=True, help="Print only the archive's image ID.")
@_root_option
def export(reference: str, path: str, quiet: bool, root: str) -> None:
    """Write IMAGE to FILE (- for standard output) as a docker save archive,
    which docker load, skopeo and procview image import read. What is
    printed goes to standard error when FILE is -."""
    from procview.runtime.images.progress import Report
    from procview.runtime.images.store import ImageError, ImageStore

    if path == "-" and sys.stdout.isatty():
        raise ImageCommandError("refusing to write an archive to a terminal: give a FILE, or redirect the output")
    with Report(out=sys.stderr if path == "-" else sys.stdout, quiet=quiet, action="Exporting") as report:
        try:
            image, archive_id = ImageStore(root).export(reference, path, report)
        except ImageError as exc:
            raise ImageCommandError(str(exc)) from None
        except OSError as exc:
            raise ImageCommandError(f"{path}: {exc.strerror or exc}") from None
        if quiet:
            report.result(archive_id)
        else:
            report.line(f"Exported image: {image.name} ({_short_id(archive_id)})")


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


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
