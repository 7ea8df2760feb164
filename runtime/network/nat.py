"""procview's nftables table: outbound NAT for its bridge networks,
isolation between them, and published ports (``ports.py``).

procview keeps its packet-filter rules in one table of its own, ``ip
procview``, and never reads or changes any other table (Docker's, a
firewall's). The table is written whole, in one transaction,
from the networks in use; it goes when the last one does.

Outbound traffic from a container leaves with the host's address, as
Docker's ``MASQUERADE`` rule does it: packets from the subnet that leave
through any interface but the network's own bridge.

The rules go through libnftables, the library behind the ``nft`` command
(the Debian package ``nftables`` brings it, as ``libnftables1``), in
nft's own language, called with ctypes. Not the ``nft`` command: the
table is removed by ``procview run`` after its container has ended, when
it can no longer start processes (its forks belong to the container's
pid namespace, whose init is gone: fork fails with ENOMEM). Not
libnftables' Python binding: it is not on PyPI.
"""

from __future__ import annotations

import ctypes

TABLE = "procview"


class NftError(Exception):
    """nft is missing or refused the rules (the message says which)."""


def table_text(networks: list[tuple[str, str]], forwards: list[str] = ()) -> str:
    """The whole table for ``networks``, (bridge interface, subnet) pairs,
    and the published ports' destination NAT rules (``ports.nat_rule``)."""
    lines = [f"table ip {TABLE} {{"]
    for chain, hook, priority in (("prerouting", "prerouting", "dstnat"), ("output", "output", "-100")):
        lines += [f"\tchain {chain} {{", f"\t\ttype nat hook {hook} priority {priority}; policy accept;"]
        lines += [f"\t\t{rule}" for rule in forwards]
        lines.append("\t}")
    lines += ["\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;"]
    for bridge, subnet in networks:
        lines += [
            f'\t\tip saddr {subnet} oifname != "{bridge}" masquerade',  # out to the world
            f'\t\toifname "{bridge}" ip saddr 127.0.0.0/8 masquerade',  # published ports reached at 127.0.0.1
            f'\t\toifname "{bridge}" ip saddr {subnet} ct status dnat masquerade',  # a container to a port of the bridge's
        ]
    lines += ["\t}"]
    # Containers on different networks cannot reach each other, as with
    # Docker's isolation rules; a published port (NATed) is reached from
    # any of them.
    lines += ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;",
              "\t\tct status dnat accept"]
    bridges = [bridge for bridge, _subnet in networks]
    lines += [f'\t\tiifname "{a}" oifname "{b}" drop' for a in bridges for b in bridges if a != b]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def replace_table_text(text: str) -> None:
    """Make the table say exactly ``text`` (``table_text``), atomically
    (``table`` then ``delete table`` makes the delete safe when there is
    none yet)."""
    _nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n" + text)


def remove_table() -> None:
    """Remove the table, if it is there."""
    _nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n")


def check_available() -> None:
    """Raise NftError now if libnftables cannot be loaded (before anything
    of a network is made, rather than halfway)."""
    _libnftables()


def _nft(script: str) -> None:
    """Run ``script`` (nft's language) as one transaction."""
    library = _libnftables()
    context = library.nft_ctx_new(0)  # NFT_CTX_DEFAULT
    if not context:
        raise NftError("nft: cannot make a libnftables context")
    try:
        library.nft_ctx_buffer_output(context)
        library.nft_ctx_buffer_error(context)
        if library.nft_run_cmd_from_buffer(context, script.encode()) != 0:
            error = (library.nft_ctx_get_error_buffer(context) or b"").decode(errors="replace").strip()
            raise NftError(f"nft: {error.splitlines()[0] if error else 'the rules were refused'}")
    finally:
        library.nft_ctx_free(context)


_LIBRARY = None


def _libnftables():
    global _LIBRARY
    if _LIBRARY is None:
        try:
            library = ctypes.CDLL("libnftables.so.1")
        except OSError:
            raise NftError("nftables is not installed (no libnftables.so.1; Debian: apt install nftables)") from None
        library.nft_ctx_new.restype = ctypes.c_void_p
        library.nft_ctx_new.argtypes = [ctypes.c_uint32]
        library.nft_ctx_free.argtypes = [ctypes.c_void_p]
        library.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        library.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        library.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        library.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        library.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _LIBRARY = library
    return _LIBRARY
