"""``python -m cvretrieval.cli``: the same as the ``cvret`` command."""

from . import main

main(prog_name="cvret")
