"""``cvret serve``, ``cvret embedders`` and ``cvret demo``."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from ._common import Output, common_options


@main.command("serve")
@click.argument("bundles", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the demo to the network (no authentication).")
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True)
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Folder with index.html from `cvret eval --report`.")
@click.option("--max-upload-mb", type=click.IntRange(1), default=20, show_default=True)
@click.option("--browser/--no-browser", default=False, help="Open a browser tab.")
@common_options
def serve_cmd(bundles: tuple[Path, ...], host: str, port: int, report_dir: Path | None,
              max_upload_mb: int, browser: bool, out: Output) -> None:
    """Serve a web page that searches BUNDLE(s) by a region of an image (extra `web`)."""
    from ..web import require_web_extra, serve

    require_web_extra()  # before saying it serves
    out.text(f"serving {len(bundles)} bundle(s) on http://{host}:{port} (Ctrl-C stops)")
    code = serve(list(bundles), host=host, port=port, report=report_dir,
                 headless=not browser, max_upload_mb=max_upload_mb)
    if code:
        raise click.ClickException(f"the web server stopped with exit status {code}")


@main.command("embedders")
@common_options
def embedders_cmd(out: Output) -> None:
    """List the available embedders and why any is unavailable."""
    from ..embedders import available_embedders

    table = available_embedders()
    for name, status in table.items():
        out.text(f"{name:<16} {status}")
    out.result(table)


@main.command("demo")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              envvar="CVRET_CACHE",
              help="Where the demo data and results go "
                   "(default: the user cache dir; env CVRET_CACHE).")
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@common_options
def demo_cmd(cache_dir: Path | None, n_jobs: int, out: Output) -> None:
    """Build a small benchmark from real photos and compare HOG, BoVW-ORB and BoVW-SIFT."""
    from ..demo import default_cache_dir, run_demo

    cache = cache_dir or default_cache_dir()
    out.text(f"demo data and results in {cache}")
    result = run_demo(cache, n_jobs=n_jobs, progress=out.progress)
    out.text(result["table"])
    out.text(f"grid of queries and their top 5: {result['grid']}")
    out.result(result)


