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
    lines.extend(_devices())
    lines.extend(_extras())
    write_stdout("\n".join(lines) + "\n")  # a closed stdout is a one-line error, not a silent exit 0


#: Optional extras (``pip install "omnizip[NAME]"``, pyproject.toml) and the packages that show them
#: installed (quantization: either backend).
EXTRAS = {"ray": ("ray",), "datasets": ("pyarrow",), "quantization": ("torchao", "bitsandbytes")}


def _devices() -> list[str]:
    """One line per device omnizip could run on, with its memory."""
    import os

    lines = []
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        lines.append(f"device cpu: {os.cpu_count()} cores, {pages * page / 1e9:.1f} GB memory")
    except (ValueError, OSError, AttributeError):
        lines.append(f"device cpu: {os.cpu_count()} cores")
    try:
        import torch
    except ImportError:
        return [*lines, "cuda available: unknown (torch missing)"]
    cuda = torch.cuda.is_available()
    lines.append(f"cuda available: {cuda}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    for index in range(torch.cuda.device_count() if cuda else 0):
        properties = torch.cuda.get_device_properties(index)
        lines.append(f"device cuda:{index}: {properties.name}, {properties.total_memory / 1e9:.1f} GB memory")
    return lines


def _extras() -> list[str]:
    """Which optional extras are installed (one of an extra's packages present)."""
    from importlib.util import find_spec

    installed = [name for name, packages in EXTRAS.items() if any(find_spec(p) is not None for p in packages)]
    missing = [name for name in EXTRAS if name not in installed]
    return [f"extras installed: {', '.join(installed) or 'none'}; not installed: {', '.join(missing) or 'none'}"]
