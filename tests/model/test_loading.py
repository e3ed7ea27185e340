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


def test_transformers_version_range_is_enforced() -> None:
    assert check_transformers_version("5.23.0") == "5.23.0"
    for bad in ("5.22.9", "5.24.0", "6.0.0", "4.57.1"):
        with pytest.raises(EnvironmentProblem, match="tested with transformers"):
            check_transformers_version(bad)
    assert check_transformers_version()  # the installed one is in range
