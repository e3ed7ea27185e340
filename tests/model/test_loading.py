"""Model loading: the tiny checkpoint's round trip, and the one-line errors for bad --model values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omnizip_cli.errors import EnvironmentProblem, ModelLoadError, UsageError
from omnizip_cli.models import ModelSpec, load_model
from omnizip_cli.models.qwen2_5_omni import ADAPTER, CHAT_TEMPLATE, NAMED_SPECIAL_TOKENS, SPECIAL_TOKENS
from omnizip_cli.models.registry import resolve_model_location
from omnizip_cli.models.tiny import build_tiny_checkpoint, is_tiny_checkpoint
from omnizip_cli.models.tiny import build_tokenizer as build_any_tokenizer


def build_tokenizer():
    return build_any_tokenizer(SPECIAL_TOKENS, NAMED_SPECIAL_TOKENS, CHAT_TEMPLATE)
from omnizip_cli.versions import check_transformers_version


def hub_name_to_thinker_name(name: str) -> str:
    """Hub layout (``thinker.model.layers...``, ``thinker.audio_tower...``) -> the thinker class's names."""
    rest = name.removeprefix("thinker.")
    if rest.startswith("lm_head."):
        return rest
    if rest.startswith("model."):
        return "model.language_model." + rest.removeprefix("model.")
    return "model." + rest


def test_tiny_checkpoint_has_the_full_hub_layout_and_round_trips(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    path = build_tiny_checkpoint(ADAPTER, tmp_path / "tiny")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni"  # the full model's config, as on the hub
    assert "thinker_config" in config
    assert is_tiny_checkpoint(path)

    saved = load_file(str(path / "model.safetensors"))
    assert saved and all(name.startswith("thinker.") for name in saved)

    loaded = load_model(ModelSpec(model=str(path), device="cpu", dtype="float32"))
    assert type(loaded.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert type(loaded.processor).__name__ == "Qwen2_5OmniProcessor"
    assert loaded.is_tiny and any("random" in w for w in loaded.warnings)
    state = loaded.model.state_dict()
    assert set(state) == {hub_name_to_thinker_name(name) for name in saved}
    for name, tensor in saved.items():
        assert torch.equal(state[hub_name_to_thinker_name(name)], tensor), name

    # Deterministic: a second build has the same weights.
    again = load_file(str(build_tiny_checkpoint(ADAPTER, tmp_path / "again") / "model.safetensors"))
    assert all(torch.equal(again[name], saved[name]) for name in saved)


def test_tiny_tokenizer_carries_the_omni_special_tokens_in_order() -> None:
    tokenizer = build_tokenizer()
    ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))
    assert tokenizer.video_token == "<|VIDEO|>" and tokenizer.audio_token == "<|AUDIO|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": "x"}, {"type": "text", "text": "Hi?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>Hi?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(tokenizer.encode("What is said in the video?")) == "What is said in the video?"


def test_tiny_model_vocabulary_matches_the_tokenizer(tiny_model) -> None:
    assert tiny_model.model.config.get_text_config().vocab_size == len(tiny_model.processor.tokenizer)
    assert tiny_model.model.config.get_text_config().initializer_range == pytest.approx(0.2)


def test_missing_model_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_location(str(tmp_path / "nope"))


def test_a_file_is_not_a_checkpoint_folder(tmp_path: Path) -> None:
    file = tmp_path / "weights.bin"
    file.write_bytes(b"\0" * 8)
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model_location(str(file))


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_location(str(tmp_path))


def test_folder_of_another_model_type_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="not a supported checkpoint.*Qwen2.5-Omni") as info:
        resolve_model_location(str(tmp_path))
    assert "\n" not in info.value.one_line()


def test_unreachable_hub_id_is_a_one_line_error() -> None:
    with pytest.raises(ModelLoadError, match="cannot load") as info:
        resolve_model_location("omnizip-test-org/no-such-model", offline=True)
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(
    ("field", "value"), [("device", "gpu"), ("dtype", "int8"), ("attn_implementation", "flash")]
)
def test_bad_model_options_are_usage_errors(field: str, value: str) -> None:
    with pytest.raises(UsageError):
        ModelSpec(**{field: value})


def test_cuda_requested_without_gpu_is_a_usage_error() -> None:
    from omnizip_cli.models.registry import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda:0")


def test_transformers_below_the_minimum_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for good in ("5.23.0", "5.24.1", "5.25.0"):
        assert check_transformers_version(good) == good
    assert capsys.readouterr().err == ""  # the tested range: no warning
    for bad in ("5.22.9", "4.57.1", "5.0.0"):
        with pytest.raises(EnvironmentProblem, match="tested with transformers>=5.23.0,<5.26.0"):
            check_transformers_version(bad)
    assert check_transformers_version()  # the installed one is supported


def test_transformers_above_the_newest_tested_warns_once_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from omnizip_cli import versions

    versions._warned.discard("5.26.0")
    assert check_transformers_version("5.26.0") == "5.26.0"
    assert check_transformers_version("5.26.0") == "5.26.0"  # once per process
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: transformers 5.26.0 is newer than")
    assert "5.25.0" in err and 'pip install "transformers>=5.23.0,<5.26.0"' in err
    assert check_transformers_version("6.1.0", warn=False) == "6.1.0" and capsys.readouterr().err == ""


def test_pyproject_allows_the_tested_range_and_stops_before_the_known_break() -> None:
    import tomllib

    from omnizip_cli import versions

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if d.startswith("transformers")]
    assert pins == [f"transformers>={versions.TRANSFORMERS_MIN},<{versions.TRANSFORMERS_KNOWN_BREAKING[:4]}"]


# --- Issue 18, cases 2 and 9: incomplete/corrupt folders, pickle weights, a config that is not an object.


@pytest.fixture
def real_like_folder(tmp_path: Path, tiny_cache: Path) -> Path:
    """A copy of the tiny checkpoint without omnizip's manifest and marker: what a real folder looks like."""
    import shutil

    from omnizip_cli.integrity import MANIFEST_NAME
    from omnizip_cli.models.tiny import ensure_tiny_checkpoint as ensure_any

    def ensure_tiny_checkpoint(cache):
        return ensure_any(ADAPTER, cache)

    folder = tmp_path / "model"
    shutil.copytree(ensure_tiny_checkpoint(tiny_cache), folder)
    (folder / MANIFEST_NAME).unlink()
    (folder / "OMNIZIP_TINY_MODEL").unlink()
    return folder


def _one_line_error(folder: Path, **spec: object) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec(model=str(folder), device="cpu", **spec))
    line = info.value.one_line()
    assert "\n" not in line
    return line


def test_real_folder_with_truncated_weights_is_a_clear_error(real_like_folder: Path) -> None:
    weights = real_like_folder / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(size - 1000)
    line = _one_line_error(real_like_folder)
    assert line == (
        f"{real_like_folder} is incomplete or corrupt: model.safetensors: truncated ({size - 1000} bytes, "
        f"expected {size}). Hint: delete this folder and download the checkpoint again"
    )


def test_real_folder_with_a_truncated_header_is_a_clear_error(real_like_folder: Path) -> None:
    (real_like_folder / "model.safetensors").write_bytes(b"\x10\x00")
    assert "model.safetensors: truncated (2 bytes, no safetensors header)" in _one_line_error(real_like_folder)


def test_real_folder_without_tokenizer_is_a_clear_error(real_like_folder: Path) -> None:
    (real_like_folder / "tokenizer.json").unlink()
    assert "is incomplete or corrupt: tokenizer.json: is missing" in _one_line_error(real_like_folder)


def test_real_folder_with_truncated_tokenizer_json_is_a_clear_error(real_like_folder: Path) -> None:
    tokenizer = real_like_folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:500])
    assert "tokenizer.json: is not valid JSON (truncated?)" in _one_line_error(real_like_folder)


def test_sharded_folder_with_a_missing_shard_is_a_clear_error(real_like_folder: Path) -> None:
    weights = real_like_folder / "model.safetensors"
    weights.rename(real_like_folder / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (real_like_folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "model-00002-of-00002.safetensors: is missing" in _one_line_error(real_like_folder)


def test_tiny_folder_given_as_a_path_is_checked_against_its_manifest(tmp_path: Path, tiny_cache: Path) -> None:
    """A folder omnizip built, passed with --model DIR, is not rebuilt (it is the user's): a clear error."""
    import shutil

    from omnizip_cli.models.tiny import ensure_tiny_checkpoint as ensure_any

    def ensure_tiny_checkpoint(cache):
        return ensure_any(ADAPTER, cache)

    folder = tmp_path / "tiny-copy"
    shutil.copytree(ensure_tiny_checkpoint(tiny_cache), folder)
    with (folder / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    assert "incomplete or corrupt: model.safetensors: has 100 bytes, expected" in _one_line_error(folder)


@pytest.mark.parametrize(("content", "kind"), [("[1, 2]", "list"), ('"qwen"', "string"), ("null", "null")])
def test_config_json_that_is_not_an_object_is_a_clear_error(tmp_path: Path, content: str, kind: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ModelLoadError, match=f"holds a JSON {kind}, not an object"):
        resolve_model_location(str(tmp_path))


def _to_pickle_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    return weights


def test_pickle_only_folder_is_refused_by_default(real_like_folder: Path) -> None:
    _to_pickle_folder(real_like_folder)
    line = _one_line_error(real_like_folder)
    assert line.startswith(f"{real_like_folder} has only pickle weights (pytorch_model.bin)")
    assert "--trust-pickle-weights" in line


def test_pickle_only_folder_loads_when_allowed(real_like_folder: Path) -> None:
    saved = _to_pickle_folder(real_like_folder)
    loaded = load_model(ModelSpec(model=str(real_like_folder), device="cpu", allow_pickle=True))
    state = loaded.model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(state[hub_name_to_thinker_name(name)], tensor), name


class _Payload:
    """Unpickling this runs code (creates a file): what weights_only=True must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_even_when_pickles_are_allowed(real_like_folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    weights = _to_pickle_folder(real_like_folder)
    weights["payload"] = _Payload(marker)  # type: ignore[assignment]
    torch.save(weights, real_like_folder / "pytorch_model.bin")
    line = _one_line_error(real_like_folder, allow_pickle=True)
    assert line.startswith("cannot load the Qwen2.5-Omni thinker from")
    assert not marker.exists()


# --- Issue 29, item 16: a refused pickle is explained in omnizip's words, not torch's.


def _with_raw_pickle(folder: Path, pickle_bytes: bytes) -> None:
    """Replace the pickle stream of ``pytorch_model.bin`` (a torch zip) by ``pickle_bytes``."""
    import io
    import zipfile

    source = (folder / "pytorch_model.bin").read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, pickle_bytes if item.filename.endswith("/data.pkl") else data)
    (folder / "pytorch_model.bin").write_bytes(out.getvalue())


@pytest.mark.parametrize(
    ("payload", "refers_to"),
    [
        ("object", "it refers to getattr"),  # a class whose __reduce__ runs code: "Unsupported global"
        (b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.", "it refers to os.system"),  # a blocked module
        (b"\x80\x02I1\n.", None),  # an opcode torch's loader does not take: its message says "file an issue"
    ],
    ids=["global", "blocked-module", "opcode"],
)
def test_refused_pickle_is_explained_in_our_words(real_like_folder: Path, tmp_path: Path, payload: object,
                                                  refers_to: str | None) -> None:
    weights = _to_pickle_folder(real_like_folder)
    if payload == "object":
        weights["payload"] = _Payload(tmp_path / "pwned")  # type: ignore[assignment]
        torch.save(weights, real_like_folder / "pytorch_model.bin")
    else:
        _with_raw_pickle(real_like_folder, payload)  # type: ignore[arg-type]
    line = _one_line_error(real_like_folder, allow_pickle=True)
    assert line.startswith(
        f"cannot load the Qwen2.5-Omni thinker from {real_like_folder}: pytorch_model.bin holds objects that are"
        " not plain tensors"
    ), line
    assert "so it is refused even with --trust-pickle-weights. Hint: convert the checkpoint to safetensors" in line
    if refers_to is not None:
        assert f"({refers_to})" in line
    for torch_words in ("file an issue", "torch.serialization", "WeightsUnpickler", "weights_only", "\\x1b"):
        assert torch_words not in line, line
    assert not (tmp_path / "pwned").exists()


# --- Issue 29, item 15 (model part): folders that cannot be entered, and OMNIZIP_CACHE set to a file.


def _unprivileged_prefix() -> list[str]:
    """A prefix that runs a child without root's permission override (``unshare --user``), else ``[]``."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0:
        return ["env"]
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "true"], capture_output=True, timeout=30).returncode:
        return []
    return [unshare, "--user"]


def _deny_under(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Simulate a folder the user cannot enter: ``os.stat`` of anything below it is refused."""
    import os

    real_stat = os.stat

    def stat(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if os.fspath(path).startswith(str(folder) + os.sep):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)


def test_model_folder_that_cannot_be_entered_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omnizip_cli.models.registry import token_pixels_before_loading

    locked = tmp_path / "locked"
    (locked / "ckpt").mkdir(parents=True)
    _deny_under(monkeypatch, locked)
    model = str(locked / "ckpt")
    assert token_pixels_before_loading(model) is None  # not known yet; the load says why
    with pytest.raises(ModelLoadError) as info:
        resolve_model_location(model)
    assert info.value.one_line() == (
        f"cannot access the model folder {model}: permission denied (on a folder of the path)."
        " Hint: check the permissions of the folders on the path"
    )


def test_model_folder_that_cannot_be_entered_in_a_real_process(tmp_path: Path) -> None:
    """``omnizip ask`` with ``--model`` in a folder the user cannot enter: one line, exit code 1."""
    import os
    import subprocess
    import sys

    try:
        from tests.helpers.media_factory import VideoSpec, write_media
    except ImportError:
        from media_factory import VideoSpec, write_media  # type: ignore[no-redef]

    prefix = _unprivileged_prefix()
    if not prefix:
        pytest.skip("no way to run a child without root's permission override here (unshare --user)")
    clip = write_media(tmp_path / "clip.mp4", VideoSpec(seconds=1.0))
    locked = tmp_path / "locked"
    (locked / "ckpt").mkdir(parents=True)
    locked.chmod(0)
    repo = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-m", "omnizip_cli", "ask", str(clip), "What?", "--model", str(locked / "ckpt"),
             "--no-cache"],
            cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=300,
        )
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"error: cannot access the model folder {locked / 'ckpt'}: permission denied" in result.stderr, \
        result.stderr[-2000:]
    assert "PermissionError" not in result.stderr


@pytest.mark.parametrize("below", [False, True], ids=["file", "below-a-file"])
def test_omnizip_cache_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  below: bool) -> None:
    from omnizip_cli.models.tiny import default_cache_dir, ensure_tiny_checkpoint

    file = tmp_path / "cache-file"
    file.write_text("not a folder")
    value = str(file / "sub") if below else str(file)
    monkeypatch.setenv("OMNIZIP_CACHE", value)
    problem = "is not a usable folder: a part of its path is a file" if below else "is a file, not a folder"
    for call in (default_cache_dir, lambda: ensure_tiny_checkpoint(ADAPTER)):
        with pytest.raises(UsageError) as info:
            call()
        assert info.value.exit_code == 2
        assert info.value.one_line().startswith(f"OMNIZIP_CACHE={value} {problem}. Hint: set OMNIZIP_CACHE to a")
        assert "File exists" not in info.value.one_line()


def test_omnizip_cache_that_is_a_file_in_a_real_process(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    try:
        from tests.helpers.media_factory import VideoSpec, write_media
    except ImportError:
        from media_factory import VideoSpec, write_media  # type: ignore[no-redef]

    clip = write_media(tmp_path / "clip.mp4", VideoSpec(seconds=1.0))
    file = tmp_path / "cache-file"
    file.write_text("not a folder")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "omnizip_cli", "ask", str(clip), "What?", "--model", "tiny"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), "OMNIZIP_CACHE": str(file)},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: OMNIZIP_CACHE={file} is a file, not a folder" in result.stderr, result.stderr[-2000:]
    assert "File exists" not in result.stderr
