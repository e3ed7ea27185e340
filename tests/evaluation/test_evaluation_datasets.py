"""Dataset readers: the generic manifest (JSONL, JSON, CSV), Video-MME, WorldSense, AVUT; bad rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from omnizip_cli.errors import EnvironmentProblem, UsageError
from omnizip_cli.evaluation.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sample_manifest_loads_every_row() -> None:
    data = load_dataset(ROOT / "samples" / "eval_example.jsonl")
    assert data.layout == "manifest" and not data.problems
    assert len(data.items) == 10
    assert [v.name for v in data.videos] == ["talking.mp4", "silent.mp4", "speech.wav"]
    assert all(item.video.is_file() for item in data.items)
    open_items = [i for i in data.items if not i.is_multiple_choice]
    assert {i.answer for i in open_items} == {"4", "twice"}


def test_manifest_jsonl_good_and_bad_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"video": "clips/a.mp4", "question": "Colour?", "options": ["A. red", "B. blue"], "answer": "b",
         "category": "visual"},
        {"video": "a.mp4", "question": "Shape?", "options": ["circle", "square"], "answer": "square"},
        {"video": "a.mp4", "question": "Open?", "answer": 4},
        {"video": "a.mp4", "question": "No answer"},
        {"question": "No video", "answer": "A"},
        {"video": "a.mp4", "question": "Out of range", "options": ["x", "y"], "answer": "C"},
        {"video": "a.mp4", "question": "Answer not an option", "options": ["x", "y"], "answer": "z"},
        {"video": "a.mp4", "question": "One option", "options": ["x"], "answer": "A"},
        {"video": "a.mp4", "question": "Options not a list", "options": 3, "answer": "A"},
        "{not json",
        ["a", "list"],
        {"id": "dup", "video": "a.mp4", "question": "First", "answer": "x"},
        {"id": "dup", "video": "a.mp4", "question": "Second", "answer": "y"},
    ])
    data = load_dataset(path)
    assert [i.question for i in data.items] == ["Colour?", "Shape?", "Open?", "First"]
    first, second, third, _ = data.items
    assert first.options == ("red", "blue") and first.answer == "B" and first.category == "visual"
    assert first.video == tmp_path / "clips" / "a.mp4" and first.video_name == "clips/a.mp4"
    assert first.id.startswith("q-") and len(first.id) == 12
    assert second.answer == "B"
    assert third.answer == "4" and not third.is_multiple_choice
    messages = [str(p) for p in data.problems]
    assert len(messages) == 9
    assert "row 4: missing 'answer'" in messages
    assert "row 5: missing 'video'" in messages
    assert any(m.startswith("row 6:") and "not one of the 2 options" in m for m in messages)
    assert any(m.startswith("row 10:") and "not JSON" in m for m in messages)
    assert any("duplicate id 'dup'" in m for m in messages)


def test_auto_ids_are_stable_when_rows_are_added(tmp_path: Path) -> None:
    row = {"video": "a.mp4", "question": "Q?", "answer": "x"}
    one = load_dataset(write_jsonl(tmp_path / "one.jsonl", [row]))
    two = load_dataset(write_jsonl(tmp_path / "two.jsonl", [{"video": "b.mp4", "question": "Q0", "answer": "y"}, row]))
    assert one.items[0].id == two.items[1].id
    assert one.fingerprint() != two.fingerprint()


def test_manifest_csv_and_json_array_and_video_dir(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "id,video,question,options,answer,category\n"
        'a,x.mp4,Colour?,"[""red"", ""blue""]",A,c1\n'
        "b,x.mp4,Shape?,circle|square|star,C,\n"
        "c,x.mp4,Open?,,yes,\n"
        "d,,No video,,A,\n",
        encoding="utf-8",
    )
    data = load_dataset(csv_path, video_dir=tmp_path / "videos")
    assert [i.id for i in data.items] == ["a", "b", "c"]
    assert data.items[0].options == ("red", "blue")
    assert data.items[1].options == ("circle", "square", "star") and data.items[1].answer == "C"
    assert data.items[1].category is None
    assert data.items[0].video == tmp_path / "videos" / "x.mp4"
    assert [str(p) for p in data.problems] == ["row 4: missing 'video'"]

    array = tmp_path / "m.json"
    array.write_text(json.dumps([{"video": "x.mp4", "question": "Q", "answer": "A", "options": ["p", "q"]}]))
    assert load_dataset(array).layout == "manifest"


VIDEOMME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem", "question": "How many people?",
     "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "C"},
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "", "videoID": "fFjv93ACGo8", "question_id": "001-2", "task_type": "Information Synopsis",
     "question": "What is it about?", "options": ["A. x", "B. y", "C. z", "D. w"], "answer": "Q"},
]


def test_videomme_json_and_parquet(tmp_path: Path) -> None:
    root = tmp_path / "Video-MME"
    (root / "videomme").mkdir(parents=True)
    (root / "data").mkdir()
    json_path = root / "videomme" / "test.json"
    json_path.write_text(json.dumps(VIDEOMME_ROWS))
    data = load_dataset(json_path)
    assert data.layout == "videomme"
    (item,) = data.items
    assert item.id == "001-1" and item.answer == "C" and item.options[2] == "Three."
    assert item.video == root / "data" / "fFjv93ACGo8.mp4" and item.category == "short"
    assert dict(item.meta)["task_type"] == "Counting Problem"
    assert len(data.problems) == 1 and "'Q'" in str(data.problems[0])

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet = root / "videomme" / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(VIDEOMME_ROWS), parquet)
    from_parquet = load_dataset(root)  # the folder: finds videomme/test-00000-of-00001.parquet
    assert from_parquet.layout == "videomme"
    assert from_parquet.items == data.items


def test_parquet_without_pyarrow_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "test.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(EnvironmentProblem) as caught:
        load_dataset(path, video_dir=tmp_path)
    assert "pip install pyarrow" in caught.value.one_line()


def test_videomme_without_a_video_folder_asks_for_video_dir(tmp_path: Path) -> None:
    path = tmp_path / "vm.json"
    path.write_text(json.dumps(VIDEOMME_ROWS))
    with pytest.raises(UsageError, match="--video-dir"):
        load_dataset(path)
    assert load_dataset(path, video_dir=tmp_path).items[0].video == tmp_path / "fFjv93ACGo8.mp4"


def test_worldsense(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    qa = {
        "XDBJmwfGKZI": {
            "video_id": "XDBJmwfGKZI", "video_duration": "60s", "duration": "<1min", "domain": "Daily Life",
            "sub_category": "Cooking", "audio_class": ["Speech"], "video_caption": "...",
            "task1": {"task_domain": "Recognition", "task_type": "Audio Recognition", "question": "What sound?",
                      "answer": "D", "candidates": ["A. dog", "B. cat", "C. car", "D. bell"]},
            "task0": {"task_domain": "Understanding", "task_type": "Event Sorting", "question": "Order?",
                      "answer": "A", "candidates": ["A. 1-2", "B. 2-1"]},
            "task2": {"task_type": "x", "question": "Broken", "answer": "A"},
        },
        "bad": "not an object",
    }
    path = tmp_path / "worldsense_qa.json"
    path.write_text(json.dumps(qa))
    data = load_dataset(tmp_path)
    assert data.layout == "worldsense"
    assert [i.id for i in data.items] == ["XDBJmwfGKZI/task0", "XDBJmwfGKZI/task1"]
    assert data.items[1].options == ("dog", "cat", "car", "bell") and data.items[1].answer == "D"
    assert data.items[1].category == "Daily Life"
    assert data.items[0].video == tmp_path / "videos" / "XDBJmwfGKZI.mp4"
    assert sorted(str(p) for p in data.problems) == [
        "row XDBJmwfGKZI/task2: missing 'candidates'", "row bad: not an object"]


def test_avut(tmp_path: Path) -> None:
    rows = [
        {"video_id": "v1", "QA_id": "v1_0", "video_path": "data/clips/v1.mp4", "question": "Who speaks?",
         "option_A": "man", "option_B": "woman", "option_C": "child", "option_D": None, "answer": "b",
         "task_type": "Speaker"},
        {"video_id": "v2", "QA_id": "v2_0", "video_path": "data/v2.mp4", "question": "Q", "option_A": "x",
         "answer": "A", "task_type": "EL"},
    ]
    path = tmp_path / "AV_Human_data.json"
    path.write_text(json.dumps(rows))
    data = load_dataset(path)
    assert data.layout == "avut"
    (item,) = data.items
    assert item.id == "v1_0" and item.options == ("man", "woman", "child") and item.answer == "B"
    assert item.video == tmp_path / "data" / "clips" / "v1.mp4" and item.category == "Speaker"
    assert "at least 2 options" in str(data.problems[0])
    videos = tmp_path / "avut_videos"
    videos.mkdir()
    assert load_dataset(path, video_dir=videos).items[0].video == videos / "clips" / "v1.mp4"


def test_unusable_inputs_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(UsageError, match="layout"):
        load_dataset(ROOT / "samples" / "eval_example.jsonl", layout="nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="expected"):
        load_dataset(tmp_path / "x.txt")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_dataset(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="--video-dir is not a folder"):
        load_dataset(ROOT / "samples" / "eval_example.jsonl", video_dir=tmp_path / "nope")


HEADER = "id,video,question,options,answer,category"
ROWS = ['a,x.mp4,Colour?,red|blue,A,c1', "b,x.mp4,Open?,,yes,c2"]


# ------------------------------------------------- issue 29: delimiters, encodings, parquet, URLs


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_with_comma_semicolon_or_tab(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text("\n".join(line.replace(",", delimiter) for line in [HEADER, *ROWS]) + "\n")
    data = load_dataset(path)
    assert [i.id for i in data.items] == ["a", "b"] and not data.problems
    assert data.items[0].options == ("red", "blue") and data.items[1].category == "c2"


def test_csv_with_another_delimiter_says_which_are_expected(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("\n".join(line.replace(",", "#") for line in [HEADER, *ROWS]) + "\n")
    with pytest.raises(UsageError, match="comma, semicolon or tab"):
        load_dataset(path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_csv_and_jsonl_with_a_byte_order_mark_are_decoded(tmp_path: Path, encoding: str) -> None:
    csv_path = tmp_path / "m.csv"
    csv_path.write_bytes(("\n".join([HEADER, *ROWS]) + "\n").encode(encoding))
    assert [i.id for i in load_dataset(csv_path).items] == ["a", "b"]
    jsonl = tmp_path / "m.jsonl"
    row = {"id": "é", "video": "x.mp4", "question": "Q\u2028?", "answer": "a"}  # U+2028 ends no line
    jsonl.write_bytes(json.dumps(row, ensure_ascii=False).encode(encoding))
    data = load_dataset(jsonl)
    assert [(i.id, i.question) for i in data.items] == [("é", "Q\u2028?")] and not data.problems


def test_text_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    no_bom = tmp_path / "m.csv"
    no_bom.write_bytes(("\n".join([HEADER, *ROWS]) + "\n").encode("utf-16-le"))
    with pytest.raises(UsageError, match="UTF-16 without a byte-order mark"):
        load_dataset(no_bom)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes('{"video": "caf\u00e9.mp4", "question": "Q?", "answer": "a"}\n'.encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8 text"):
        load_dataset(latin)


def test_corrupt_parquet_is_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "test.parquet"
    path.write_bytes(b"video,question\nx.mp4,Q?\n")
    with pytest.raises(UsageError, match="not a parquet file"):
        load_dataset(path, video_dir=tmp_path)
    path.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")  # the magic bytes, nothing readable between
    with pytest.raises(UsageError, match="not a readable parquet file"):
        load_dataset(path, video_dir=tmp_path)


def test_urls_in_a_manifest_are_refused_per_row(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"video": "https://example.com/v.mp4", "question": "Q?", "answer": "a"}) + "\n"
                    + json.dumps({"video": "x.mp4", "question": "Q?", "answer": "a"}) + "\n")
    data = load_dataset(path)
    assert [i.video_name for i in data.items] == ["x.mp4"]
    assert [str(p) for p in data.problems] == [
        "row 1: URLs are not supported in manifests: download the file first"]
    with pytest.raises(UsageError, match="URLs are not supported"):
        load_dataset("https://example.com/eval.jsonl")
