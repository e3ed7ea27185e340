"""The results folder of ``omnizip evaluate --out DIR`` (kvpress-style) and the metrics.

Files, written by the results-folder writer shared with ``profile --out``
(:class:`omnizip_cli.report.results_folder.ResultsFolder`):

* ``config.json``: model, settings, dataset (with a fingerprint of its items) and options. A rerun
  with the same folder resumes only when these are equal; otherwise it refuses, unless
  ``overwrite``.
* ``predictions.jsonl``: one line per (item, setting), appended and flushed as answers arrive (any
  order). A torn last line (the run was killed mid-write) is dropped and cut off before appending.
  When a pair appears twice (an error retried), the last line wins.
* ``metrics.json``: :func:`compute_metrics` of the predictions, in dataset order, so it is the same
  whatever the order of the lines (resumed runs, several workers).
* ``samples.jsonl``: the answers in lmms-eval's per-sample log shape
  (:mod:`omnizip_cli.evaluation.samples`), rewritten whole with ``metrics.json``.
* ``accuracy.png``: :func:`omnizip_cli.evaluation.summary.render_accuracy_chart`.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omnizip_cli.errors import UsageError
from omnizip_cli.evaluation.datasets import Dataset
from omnizip_cli.evaluation.paired import paired_summary
from omnizip_cli.evaluation.protocol import Setting
from omnizip_cli.evaluation.samples import SAMPLES
from omnizip_cli.report.results_folder import ACCURACY_CHART as CHART
from omnizip_cli.report.results_folder import CONFIG, METRICS, PREDICTIONS, ResultsFolder

__all__ = ["CONFIG", "METRICS", "PREDICTIONS", "CHART", "KIND", "SAMPLES", "EvaluationFolder", "compute_metrics"]

#: The ``kind`` in an evaluation's config.json (how ``--out`` folders are recognised).
KIND = "evaluate"
#: The parts of config.json that must match for a run to resume.
_MATCHED = ("model", "settings", "dataset", "options")
_START_OVER = "pass --overwrite to start over"


class EvaluationFolder(ResultsFolder):
    """The results folder of an evaluation: checks or writes ``config.json``, reads and appends predictions."""

    def prepare(self, config: Mapping[str, Any], overwrite: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
        """Make the folder ready for ``config`` and return the finished records by (item, setting).

        A new or empty folder gets ``config.json``. A folder holding a run with the same model,
        settings, dataset and options resumes: its predictions are returned. A different run
        raises :class:`UsageError` naming what differs, unless ``overwrite`` (which deletes the old
        results first). A folder holding ``predictions.jsonl`` but no ``config.json``, or a
        ``config.json`` that is not JSON, is refused unless ``overwrite``; a folder of other files,
        or of another command's results, is refused even with ``overwrite``
        (:meth:`~omnizip_cli.report.results_folder.ResultsFolder.check_owned`): those files are not
        an evaluation's to delete.
        """
        self.create()
        config_path = self.path / CONFIG
        damaged = _is_broken_json(config_path) or ((self.path / PREDICTIONS).exists() and not config_path.exists())
        if not damaged:
            self.check_owned(KIND)
        if overwrite:
            self.remove(CONFIG, PREDICTIONS, METRICS, CHART, SAMPLES)
        if config_path.exists():
            try:
                old = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise UsageError(f"{config_path} is not valid JSON", hint=_START_OVER) from None
            different = [key for key in _MATCHED if _compared(key, old.get(key)) != _compared(key, config.get(key))]
            if different:
                details = "; ".join(_difference(key, old.get(key), config.get(key)) for key in different)
                raise UsageError(
                    f"{self.path} holds another run: different {', '.join(different)} ({details})",
                    hint=f"{_START_OVER}, or choose another --out",
                )
        elif (self.path / PREDICTIONS).exists():
            raise UsageError(f"{self.path} has {PREDICTIONS} but no {CONFIG}",
                             hint=f"{_START_OVER}, or choose another --out")
        self.write_json(CONFIG, config)
        return self.read_predictions()

    def read_predictions(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The records by (item, setting), the last line winning. A torn last line (no newline, not
        JSON) is cut off the file; a complete last line without its newline gets one. A bad line
        elsewhere is an error."""
        records = self.read_lines(PREDICTIONS, _parse_record, what="a prediction record", hint=_START_OVER)
        return dict(records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one prediction record as a line of ``predictions.jsonl`` and flush it to disk."""
        self.append_line(PREDICTIONS, record)

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` and return its path."""
        return self.write_json(METRICS, metrics)

    def write_samples(self, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Write ``samples.jsonl`` (one JSON object a line) atomically and return its path."""
        path = self.path / SAMPLES
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path


def _is_broken_json(path: Path) -> bool:
    """True for an existing file that does not parse as JSON (an evaluation's config.json, torn)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    return False


def _parse_record(raw: bytes) -> tuple[tuple[str, str], dict[str, Any]] | None:
    """``((item, setting), record)`` of one ``predictions.jsonl`` line; None when it is not one."""
    try:
        record = json.loads(raw)
        return (str(record["item"]), str(record["setting"])), record
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _compared(key: str, value: Any) -> Any:
    """What must be equal for a resume: the dataset by its items' fingerprint (not its path, so
    the same file reached another way, or videos moved with --video-dir, still resume)."""
    if key == "dataset" and isinstance(value, dict):
        return value.get("fingerprint")
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _difference(key: str, old: Any, new: Any) -> str:
    if key == "dataset":
        return "dataset items differ (fingerprint " + str((old or {}).get("fingerprint", "?"))[:12] + " -> " \
            + str((new or {}).get("fingerprint", "?"))[:12] + ")"
    if key == "settings":
        return f"settings were {', '.join(s.get('key', '?') for s in old or [])}, now " \
               f"{', '.join(s.get('key', '?') for s in new or [])}"
    if isinstance(old, dict) and isinstance(new, dict):
        changed = sorted(k for k in set(old) | set(new) if _jsonable(old.get(k)) != _jsonable(new.get(k)))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
        return f"{key} {shown}" + (" ..." if len(changed) > 3 else "")
    return f"{key}: {old!r} -> {new!r}"


# ------------------------------------------------------------------------------------- metrics


def _median(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _accuracy(records: Sequence[Mapping[str, Any]]) -> float | None:
    return sum(bool(r["correct"]) for r in records) / len(records) if records else None


def item_retention(record: Mapping[str, Any]) -> float | None:
    """The realized retention of one answer: its audio+video tokens over the full run's."""
    if record.get("retention_realized") is not None:
        return float(record["retention_realized"])
    before, after = record.get("tokens_before"), record.get("tokens_after")
    return after / before if before and after is not None else None


def _paired(rows: Sequence[Mapping[str, Any]], full_ok: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`~omnizip_cli.evaluation.paired.paired_summary` of ``rows`` (answered) against full's answers."""
    pairs = [(bool(r["correct"]), bool(full_ok[r["item"]]["correct"])) for r in rows if r["item"] in full_ok]
    return paired_summary(pairs)


def compute_metrics(dataset: Dataset, settings: Sequence[Setting],
                    records: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[str, Any]:
    """Per-setting metrics over the items of ``dataset`` (records of other items are ignored).

    For each setting:

    * ``items``: items of the dataset; ``answered``: with a prediction (no error); ``errors``;
      ``missing``: not run yet; ``unparsed``: answered multiple-choice items whose letter could not
      be extracted (scored wrong);
    * ``accuracy``: correct / answered (errors are left out, and counted);
    * ``accuracy_kept``: the paper's metric, accuracy of this setting / accuracy of ``full``, both
      over the items answered under both (paired), and ``agreement_with_full``: the fraction of
      those items where both extracted the same answer (None without a ``full`` setting);
    * paired against ``full`` on the items both answered (:mod:`omnizip_cli.evaluation.paired`):
      ``delta_vs_full``, ``delta_ci95`` (95 % paired bootstrap), ``mcnemar_p`` (exact) and
      ``flips`` (``right_to_wrong``, ``wrong_to_right``); None without a ``full`` setting;
    * ``by_category``: items, correct and accuracy per category (when the dataset has categories),
      with the same paired figures;
    * ``retention``: audio+video tokens kept over all answered items (sum after / sum before),
      ``retention_realized``: the mean of the per-item realized retention (the setting's
      audio+video tokens over the full run's, ``frames@R``/``pixels@R`` included) and
      ``retention_realized_range`` its ``[min, max]``, ``tokens_before_median`` and
      ``tokens_after_median``;
    * ``ttft_seconds_median``, ``decode_tokens_per_second_median``, ``peak_memory_bytes_max``.

    Every figure comes from the records, so the metrics do not depend on the order the answers
    arrived in or on how many workers produced them.
    """
    full = next((s for s in settings if s.is_full), None)
    per_setting: dict[str, list[Mapping[str, Any]]] = {}
    for setting in settings:
        per_setting[setting.key] = [records[(item.id, setting.key)] for item in dataset.items
                                    if (item.id, setting.key) in records]
    has_categories = any(item.category for item in dataset.items)
    full_ok = {r["item"]: r for r in per_setting.get(full.key, []) if not r.get("error")} if full else {}
    out_settings: dict[str, Any] = {}
    for setting in settings:
        rows = per_setting[setting.key]
        ok = [r for r in rows if not r.get("error")]
        entry: dict[str, Any] = {
            "label": setting.label,
            "source": setting.source,
            "method": setting.family,
            "target_retention": setting.target_retention,
            "items": len(dataset.items),
            "answered": len(ok),
            "errors": len(rows) - len(ok),
            "missing": len(dataset.items) - len(rows),
            "correct": sum(bool(r["correct"]) for r in ok),
            "unparsed": sum(1 for r in ok if r.get("multiple_choice") and r.get("extracted") is None),
            "accuracy": _accuracy(ok),
        }
        if full is not None:
            paired = [(r, full_ok[r["item"]]) for r in ok if r["item"] in full_ok]
            entry["paired_items"] = len(paired)
            acc_here = _accuracy([r for r, _ in paired])
            acc_full = _accuracy([f for _, f in paired])
            entry["accuracy_kept"] = _ratio(acc_here, acc_full)
            entry["agreement_with_full"] = (
                sum(r.get("extracted") == f.get("extracted") for r, f in paired) / len(paired) if paired else None
            )
            entry.update({k: v for k, v in _paired(ok, full_ok).items() if k != "paired_items"})
        else:
            entry["paired_items"] = entry["accuracy_kept"] = entry["agreement_with_full"] = None
            entry.update(delta_vs_full=None, delta_ci95=None, mcnemar_p=None, flips=None)
        if has_categories:
            groups: dict[str, list[Mapping[str, Any]]] = {}
            for r in ok:
                groups.setdefault(r.get("category") or "(none)", []).append(r)
            entry["by_category"] = {
                name: {"items": len(g), "correct": sum(bool(r["correct"]) for r in g), "accuracy": _accuracy(g),
                       **(_paired(g, full_ok) if full is not None else {})}
                for name, g in sorted(groups.items())
            }
        counted = [r for r in ok if r.get("tokens_before") is not None and r.get("tokens_after") is not None]
        before = sum(int(r["tokens_before"]) for r in counted)
        entry["retention"] = _ratio(float(sum(int(r["tokens_after"]) for r in counted)), float(before))
        realized = [value for r in ok if (value := item_retention(r)) is not None]
        entry["retention_realized"] = statistics.fmean(realized) if realized else None
        entry["retention_realized_range"] = [min(realized), max(realized)] if realized else None
        entry["tokens_before_median"] = _median(r.get("tokens_before") for r in ok)
        entry["tokens_after_median"] = _median(r.get("tokens_after") for r in ok)
        entry["ttft_seconds_median"] = _median(r.get("ttft_seconds") for r in ok)
        entry["decode_tokens_per_second_median"] = _median(r.get("decode_tokens_per_second") for r in ok)
        peaks = [int(r["peak_memory_bytes"]) for r in ok if r.get("peak_memory_bytes") is not None]
        entry["peak_memory_bytes_max"] = max(peaks) if peaks else None
        if full is not None and not setting.is_full and entry["ttft_seconds_median"] and full_ok:
            full_ttft = _median(f.get("ttft_seconds") for f in full_ok.values())
            entry["ttft_speedup_vs_full"] = _ratio(full_ttft, entry["ttft_seconds_median"])
        out_settings[setting.key] = entry
    return {
        "dataset": {"name": dataset.name, "layout": dataset.layout, "items": len(dataset.items),
                    "videos": len(dataset.videos), "bad_rows": len(dataset.problems)},
        "full_setting": full.key if full else None,
        "settings": out_settings,
        "complete": all(e["missing"] == 0 for e in out_settings.values()),
    }
