"""``samples.jsonl``: the answers in lmms-eval's per-sample log shape, so results drop into its tooling.

lmms-eval's ``--log_samples`` writes one JSON object per item with ``doc_id`` (the item's index in
the task), ``target`` (the reference answer), ``resps`` (the raw model outputs, a list per request)
and ``filtered_resps`` (what the task's filter kept: here the extracted letter or normalised
answer), plus the task's own fields. An evaluation writes one line per (item, setting), in dataset
order and, inside an item, in the settings' order, from ``predictions.jsonl`` (so it is rewritten
whole at the end of every run and never depends on the order answers arrived in). Our fields:
``setting``, ``method``, ``target_retention``, ``retention_realized``, ``tokens_before``,
``tokens_after``, ``ttft_seconds``, ``decode_tokens_per_second``, ``accuracy`` (1.0 / 0.0; None for a
failed answer), ``unparsed``, ``error``, and ``doc`` (the item: id, video, question, options,
category).

A failed answer keeps ``resps`` empty and its ``error``; it is not a wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from omnizip_cli.evaluation.datasets import Dataset
from omnizip_cli.evaluation.protocol import Setting

__all__ = ["SAMPLES", "sample_rows"]

#: The file name in the results folder.
SAMPLES = "samples.jsonl"


def sample_rows(dataset: Dataset, settings: Sequence[Setting],
                records: Mapping[tuple[str, str], Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """One lmms-eval-shaped sample per (item, setting) that has a record (see the module docstring)."""
    for doc_id, item in enumerate(dataset.items):
        doc = {"id": item.id, "video": item.video_name, "question": item.question, "options": list(item.options),
               "category": item.category}
        for setting in settings:
            record = records.get((item.id, setting.key))
            if record is None:
                continue
            failed = bool(record.get("error"))
            response = record.get("response")
            extracted = record.get("extracted")
            yield {
                "doc_id": doc_id,
                "doc": doc,
                "target": item.answer,
                "resps": [] if failed else [[response or ""]],
                "filtered_resps": [] if failed else [extracted if extracted is not None else ""],
                "accuracy": None if failed else float(bool(record.get("correct"))),
                "unparsed": (not failed) and item.is_multiple_choice and extracted is None,
                "setting": setting.key,
                "method": setting.family,
                "target_retention": setting.target_retention,
                "retention_realized": record.get("retention_realized"),
                "tokens_before": record.get("tokens_before"),
                "tokens_after": record.get("tokens_after"),
                "ttft_seconds": record.get("ttft_seconds"),
                "decode_tokens_per_second": record.get("decode_tokens_per_second"),
                "error": record.get("error"),
            }
