"""``procview image``: import, list and remove the images of ``procview run``.

    procview image import PATH [--name NAME:TAG] [-q] [--root DIR]
    procview image ls [--root DIR]
    procview image rm NAME... [--root DIR]
    procview image export IMAGE FILE [-q] [--root DIR]
    procview image tag SOURCE TARGET [--root DIR]
    procview pull [--platform OS/ARCH] [-q] [--insecure-registry HOST[:PORT]]... [--plain-http] [--root DIR] REF
    procview push [-q] [--insecure-registry HOST[:PORT]]... [--plain-http] [--root DIR] REF
    procview login [-u USER] [-p PASSWORD | --password-stdin] [SERVER]
    procview logout [SERVER]

``import``, ``export`` and ``pull`` show their progress per layer
(``progress.py``: bars on a terminal, else a line per layer; ``-q``: only
the result). ``--root`` defaults to ``$PROCVIEW_ROOT``, else ``/var/lib/procview-runtime``.
A failure prints one line, ``procview: error: ...``, on stderr and exits 125
(Docker's code for the tool itself failing); ``procview pull``, ``push``,
``login`` and ``logout`` exit 1, as docker's; bad usage exits 2 (click's).
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


@image.command("tag")
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@_root_option
def tag(source: str, target: str, root: str) -> None:
    """Name the image SOURCE (NAME[:TAG] or ID) also TARGET (NAME[:TAG]),
    as docker tag: e.g. before a push to HOST[:PORT]/REPO:TAG."""
    from procview.runtime.images.store import ImageError, ImageStore

    try:
        ImageStore(root).tag(source, target)
    except ImageError as exc:
        raise ImageCommandError(str(exc)) from None


class PullError(ImageCommandError):
    exit_code = 1  # docker pull's (and push's, login's, logout's)


_insecure_option = click.option(
    "--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
    help="Allow plain HTTP (and unverified HTTPS) to this registry; repeatable; also "
         "$PROCVIEW_INSECURE_REGISTRIES. Loopback registries always are.")
_plain_http_option = click.option("--plain-http", is_flag=True, help="Use HTTP, not HTTPS (only for the registries above).")


@click.command("pull")
@click.argument("reference", metavar="REF")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="The platform to pull from an image index (default: this machine's).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's reference.")
@_insecure_option
@_plain_http_option
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


@click.command("push")
@click.argument("reference", metavar="REF")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's reference.")
@_insecure_option
@_plain_http_option
@_root_option
def push(reference: str, quiet: bool, insecure: tuple[str, ...], plain_http: bool, root: str) -> None:
    """Push a local image to a registry (OCI distribution API), as docker
    push: REF is NAME[:TAG], the image's name in the store, whose domain
    is the registry (procview image tag names an image so)."""
    from procview.runtime.images.progress import Report
    from procview.runtime.images.push import PushOptions, push as push_image
    from procview.runtime.images.store import ImageError, ImageStore

    options = PushOptions(insecure=insecure, plain_http=plain_http)
    with Report(quiet=quiet, action="Pushing") as report:
        try:
            result = push_image(ImageStore(root), reference, options, report)
        except ImageError as exc:
            raise PullError(str(exc)) from None
        except OSError as exc:
            raise PullError(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}") from None
        if quiet:
            report.result(f"{result.reference.domain}/{result.reference.path}:{result.reference.tag}")


@click.command("login")
@click.argument("server", metavar="[SERVER]", default="docker.io")
@click.option("-u", "--username", help="User name (asked for on a terminal when missing).")
@click.option("-p", "--password", help="Password (insecure: visible to other users; prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_insecure_option
@_plain_http_option
def login(server: str, username: str | None, password: str | None, password_stdin: bool,
          insecure: tuple[str, ...], plain_http: bool) -> None:
    """Log in to a registry, as docker login: check the credentials
    against SERVER (HOST[:PORT]; default Docker Hub) and store them in
    Docker's config.json ($DOCKER_CONFIG, else ~/.docker)."""
    import os

    from procview.runtime.images.login import login as store_login
    from procview.runtime.images.registry import RegistryError

    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive")
    if password is not None:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
    if password_stdin:
        if not username:
            raise PullError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not username or password is None:
        if not sys.stdin.isatty():
            raise PullError("cannot perform an interactive login from a non-terminal: give --username and --password-stdin")
        username = username or click.prompt("Username")
        password = password if password is not None else click.prompt("Password", hide_input=True)
    try:
        path = store_login(server, username, password, dict(os.environ), insecure, plain_http)
    except RegistryError as exc:
        raise PullError(str(exc)) from None
    click.echo(f"WARNING! Your password will be stored unencrypted in {path}.", err=True)
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("server", metavar="[SERVER]", default="docker.io")
def logout(server: str) -> None:
    """Remove SERVER's credentials (default Docker Hub) from Docker's config.json."""
    import os

    from procview.runtime.images.login import logout as remove_login
    from procview.runtime.images.registry import RegistryError

    try:
        removed = remove_login(server, dict(os.environ))
    except RegistryError as exc:
        raise PullError(str(exc)) from None
    click.echo(f"Removing login credentials for {server}" if removed else f"Not logged in to {server}")


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
