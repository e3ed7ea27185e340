"""``omnizip serve``: an OpenAI-compatible HTTP server that compresses a video once and answers many.

Modules, one job each:

- :mod:`.settings`: the server's configuration (:class:`~.settings.ServeSettings`).
- :mod:`.errors`: OpenAI-style errors (:class:`~.errors.ApiError`).
- :mod:`.request`: a chat-completions body checked and turned into a :class:`~.request.ChatRequest`.
- :mod:`.media_source`: a ``video_url``/``audio_url``/``input_audio`` part resolved to a local file
  (allowed roots, ``data:`` URLs, downloads, uploads).
- :mod:`.engine`: the model, the prefixes held in memory, and the one worker thread that runs
  every model call (:class:`~.engine.Engine`).
- :mod:`.metrics`: the Prometheus metrics.
- :mod:`.app`: the ASGI application (Starlette) and its routes.

Nothing here is imported by ``omnizip --help``; the server's packages come with
``pip install "omnizip[serve]"``.
"""
