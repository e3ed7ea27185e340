"""Library logging kept out of omnizip's output (used by the CLI and by evaluation workers)."""

from __future__ import annotations

__all__ = ["quiet_libraries"]


def quiet_libraries(verbose: bool = False) -> None:
    """Silence transformers' and huggingface_hub's info/warnings (e.g. the hub's "Retrying in 2s"
    lines) and transformers' weight-loading bars unless asked: they would clutter stderr around our
    one-line errors. The hub's download bars stay: a first 7B download takes minutes."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    if not verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        hub_logging.set_verbosity_error()
    # transformers 5.25 deprecates the language models' ``past_key_values`` argument for ``cache``
    # (removal in 5.40); 5.23, the oldest supported release, has no ``cache`` argument (it would be
    # swallowed by ``**kwargs`` and ignored), so omnizip passes ``past_key_values`` on every release
    # and pyproject.toml stops below 5.40: the warning says nothing a user can act on.
    import warnings

    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
