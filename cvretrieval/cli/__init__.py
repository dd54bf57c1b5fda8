"""The ``cvret`` command: a thin click layer over the library.

Every command takes ``--json PATH`` (``-`` for standard output, then nothing else is
printed there), ``-v`` (more detail, tracebacks) and ``-q`` (errors only). Library
errors become one-line messages with exit code 1. Each command group lives in its own
module of this package; importing them registers the commands on :func:`main`.
"""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cvret")
def main() -> None:
    """cvret: index, search and evaluate image collections with classical or deep features."""




from . import (  # noqa: E402,F401  (importing registers the commands)
    datasets,
    dedup,
    evaluate,
    index,
    misc,
    models,
    train,
)

if __name__ == "__main__":  # pragma: no cover
    main()
