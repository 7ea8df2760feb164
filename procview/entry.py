"""The ``procview`` executable's entry point.

``procview run`` goes straight to a fork server if one listens
(``procview.runtime.forkserver``, built-in modules only), else to
``procview.runtime.run_command``, which needs neither click nor the other commands'
modules: its start-up is measured against runc's whole run
(docs/performance.md). ``procview listener-holder`` goes straight to
``procview.listener_holder`` (standard library only). Every other command, and
``procview --help``, goes through the click group in ``procview.cli``.
"""

import sys


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        from procview.runtime import forkserver

        forkserver.hand_over(sys.argv[2:])  # returns only if no fork server took it
        from procview.runtime import run_command

        run_command.main(sys.argv[2:])
    if sys.argv[1:2] == ["listener-holder"]:
        from procview import listener_holder

        sys.exit(listener_holder.main(sys.argv[2:]))
    from procview.cli import main as cli

    cli()
