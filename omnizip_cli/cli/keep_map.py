"""``omnizip keep-map VIDEO -o map.png``: a picture of what OmniZip keeps, without a question.

The keep plan depends only on the media and the prompt budget (never on the question), so no
question is needed; the budget is ask's (``--max-prompt-tokens``, else the context minus
``--max-new-tokens``), so the map shows the plan ask gives. The
video is opened through the library's one path (:meth:`omnizip_cli.generation.Session.open`,
without the disk cache: the map needs the frames), and the picture is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .answering import CHAT_QUESTION_RESERVE, Answering, open_options
from .app import app
from .options import (
    COMPRESSION,
    DEFAULT_MAX_NEW_TOKENS,
    MEDIA,
    MODEL,
    OUTPUT,
    MaxPromptOpt,
    OutputOptions,
    check_output_file,
    check_prompt_budget,
    with_options,
)
from .signals import write_stdout

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..media import MediaOptions
    from ..models import ModelSpec


@app.command("keep-map")
@with_options(MODEL, MEDIA, COMPRESSION, OUTPUT, stdout="json")
def keep_map(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video (or audio) file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG to write.", show_default=False)],
    model: ModelSpec,
    media: MediaOptions,
    compression: CompressionSetting,
    output: OutputOptions,
    max_prompt_tokens: MaxPromptOpt = None,
    max_new_tokens: Annotated[int, typer.Option(
        help="As in ask: the default prompt budget is the context minus this.")] = DEFAULT_MAX_NEW_TOKENS,
) -> None:
    """Write a PNG of what OmniZip keeps of VIDEO: frames with dropped patches dimmed, audio tokens, groups."""
    import json

    from ..generation import GenerationOptions
    from ..report.keep_map import keep_map_for_session, render_keep_map, save_keep_map

    check_output_file(out, "--out")
    check_prompt_budget(max_prompt_tokens)
    answering = Answering.start(output)
    # The plan ask would give: the same prompt budget (a video re-fitted to the context is drawn as
    # re-fitted, and the warning says so), with chat's question reserve. Never from the disk cache:
    # the map needs the decoded frames and the plan.
    options = open_options(media=media, compression=compression, generation=GenerationOptions(max_new_tokens),
                           system=None, max_prompt_tokens=max_prompt_tokens, question_reserve=CHAT_QUESTION_RESERVE,
                           use_cache=False, revision=model.revision)
    session = answering.open(video, model, options)
    path = save_keep_map(render_keep_map(keep_map_for_session(session)), out)
    tokens = session.tokens
    if output.json_output:
        write_stdout(json.dumps({"keep_map": str(path), "tokens": tokens.to_dict(),
                                 "groups": session.group_rows}, indent=2) + "\n")
    elif not output.quiet:
        answering.console.print(f"wrote {path}: {tokens.audio_video.after} of {tokens.audio_video.before} "
                                f"audio+video tokens kept ({tokens.audio_video.retention * 100:.1f} %)",
                                markup=False, highlight=False)
