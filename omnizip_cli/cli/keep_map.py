"""``omnizip keep-map VIDEO -o map.png``: a picture of what OmniZip keeps, without a question.

The keep plan depends only on the media (never on the question), so no question is needed: the
video is opened through the library's one path (:meth:`omnizip_cli.generation.Session.open`,
without the disk cache: the map needs the frames), and the picture is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .answering import Answering
from .app import app
from .options import COMPRESSION, MEDIA, MODEL, OUTPUT, OutputOptions, check_output_file, with_options
from .signals import write_stdout

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..media import MediaOptions
    from ..models import ModelSpec


@app.command("keep-map")
@with_options(MODEL, MEDIA, COMPRESSION, OUTPUT)
def keep_map(
    video: Annotated[Path, typer.Argument(help="Video (or audio) file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG to write.", show_default=False)],
    model: ModelSpec,
    media: MediaOptions,
    compression: CompressionSetting,
    output: OutputOptions,
) -> None:
    """Write a PNG of what OmniZip keeps of VIDEO: frames with dropped patches dimmed, audio tokens, groups."""
    import json

    from ..generation import OpenOptions
    from ..report.keep_map import keep_map_for_session, render_keep_map, save_keep_map

    check_output_file(out, "--out")
    answering = Answering.start(output)
    # The map needs the decoded frames and the plan: never from the disk cache. No prompt budget:
    # the map shows the setting as asked.
    session = answering.open(video, model, OpenOptions(media=media, compression=compression, cache=False,
                                                       revision=model.revision))
    path = save_keep_map(render_keep_map(keep_map_for_session(session)), out)
    tokens = session.tokens
    if output.json_output:
        write_stdout(json.dumps({"keep_map": str(path), "tokens": tokens.to_dict(),
                                 "groups": session.group_rows}, indent=2) + "\n")
    elif not output.quiet:
        answering.console.print(f"wrote {path}: {tokens.audio_video.after} of {tokens.audio_video.before} "
                                f"audio+video tokens kept ({tokens.audio_video.retention * 100:.1f} %)",
                                markup=False, highlight=False)
