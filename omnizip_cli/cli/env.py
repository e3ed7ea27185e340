"""``omnizip env``: the versions and devices omnizip would use."""

from __future__ import annotations

from .. import __version__
from .app import app, run_guarded


@app.command()
def env() -> None:
    """Show the versions and devices omnizip would use."""
    run_guarded(False, _show)


def _show() -> None:
    import platform

    from ..versions import TRANSFORMERS_BELOW, TRANSFORMERS_MIN, installed_version
    from .signals import write_stdout

    lines = [f"omnizip {__version__}", f"python {platform.python_version()}"]
    for package in ("torch", "torchvision", "transformers", "av", "librosa", "typer", "rich", "numpy"):
        lines.append(f"{package} {installed_version(package) or 'not installed'}")
    lines.append(f"transformers range tested: >={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        lines.append(f"cuda available: {cuda}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    except ImportError:
        lines.append("cuda available: unknown (torch missing)")
    write_stdout("\n".join(lines) + "\n")  # a closed stdout is a one-line error, not a silent exit 0
