"""``cvret models``: list and fetch the pretrained embedders of the model registry."""

from __future__ import annotations

import click

from . import main
from ._common import Output, common_options


@main.group("models")
def models_group() -> None:
    """Pretrained embedders: list them, fetch one, then use --features model:NAME."""


@models_group.command("list")
@common_options
def models_list(out: Output) -> None:
    """The models `cvret models fetch` can download, and whether they are in the cache."""
    from ..models import list_models

    rows = list_models()
    for r in rows:
        size = f"{r['size_mb']:.0f} MB" if r.get("size_mb") is not None else "?"
        state = "fetched" if r["fetched"] else "not fetched"
        check = "" if r["verified"] else ", no published checksum"
        out.text(f"{r['name']:<20} {r['runtime']:<7} {size:>7}  {r['licence'] or '?':<11} "
                 f"{state}{check}  {r['title']}")
    out.result(rows)


@models_group.command("fetch")
@click.argument("name")
@click.option("--base-url", default=None, envvar="CVRET_FETCH_BASE_URL",
              help="Fetch from a mirror with the same paths (env CVRET_FETCH_BASE_URL).")
@click.option("--allow-unverified", is_flag=True,
              help="Accept a model that has no published checksum (its hash is recorded).")
@click.option("--force", is_flag=True, help="Download and prepare again.")
@common_options
def models_fetch(name: str, base_url: str | None, allow_unverified: bool, force: bool,
                 out: Output) -> None:
    """Download and verify the model NAME (see `cvret models list`) into the cache."""
    from ..models import fetch_model

    path = fetch_model(name, base_url=base_url, allow_unverified=allow_unverified, force=force,
                       progress=out.progress is not False)
    out.text(f"{name} is ready ({path}): use it with --features model:{name}")
    out.result({"name": name, "path": str(path)})
