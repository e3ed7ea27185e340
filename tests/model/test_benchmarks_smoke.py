"""Smoke tests of the benchmarks (CI has no GPU): each runs its small mode and prints JSON lines.

* ``benchmarks/gpu_suite.sh --tiny`` (run once per module, shared): every step of the GPU suite on
  the CPU with the tiny model, every record kind the GPU run writes; its ``model_stages.py
  --tiny`` output (every stage, equivalence and ratio line with its keys; the same for
  ``model_stages.py --family qwen3 --tiny``, the tiny Qwen3-Omni), ``decode_speed.py
  --tiny``, ``session.py --tiny`` (5 questions on one session, cold / disk-cache reopen / full) and
  ``preprocess.py --tiny`` (device path equal to stock) are checked from there; the steps ran in
  the suite's order of value, each under its limit. (Time limits, cut-short runs, the memory check
  and the device command: ``tests/model/test_gpu_suite_run.py``.)
* its synthetic ``input_ids`` layout equals what the real ``Qwen2_5OmniProcessor`` (and, for
  ``--family qwen3``, ``Qwen3OmniMoeProcessor``) produces for a video with its audio track (so the
  full-size timings are for the sequence users really send);
* the full-size configurations (Qwen2.5-Omni 7B/3B, Qwen3-Omni 30B-A3B) have the stated dimensions
  and parameter counts (meta device);
* ``benchmarks/keep_plan.py --quick``, ``media_decode.py --quick`` and ``saliency_memory.py --quick``.
* ``benchmarks/serve.py --tiny`` (a real ``omnizip serve`` process: first vs repeated questions, 1 and 4
  clients, SIGTERM), ``--tiny --replicas 2`` (the same load on one process and on 2 Ray Serve
  replicas: 4 videos spread over both, each on one replica, the 2-over-1 ratios) and its usage errors.

The subprocess smokes are marked ``slow`` (CI still runs them: the default run includes slow tests).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
TIMEOUT = 600

STAGE_KEYS = {
    "bench", "kind", "model", "family", "device", "dtype", "clip_seconds", "tokens", "stage", "variant",
    "best_s", "median_s", "runs_s", "peak_memory_bytes", "memory_kind",
}
EXPECTED_STAGES = {
    ("vision_encoder", "stock"), ("vision_encoder", "fast"), ("audio_encoder", "stock"), ("audio_encoder", "fast"),
    ("saliency", None), ("keep_plan", "45"), ("keep_plan", "35"), ("prune", "45"), ("prune", "35"),
    ("prefill", "full"), ("prefill", "45"), ("prefill", "35"), ("decode", "full"), ("decode", "35"),
    ("ttft", "stock_full"), ("ttft", "fast_35"), ("ttft", "stock_generate"),
}
EXPECTED_RATIOS = {
    "prefill_full_over_35", "prefill_full_over_45", "ttft_stock_full_over_fast_35",
    "ttft_stock_generate_over_fast_35", "compression_over_prefill_full",
    "keep_plan_and_saliency_over_prefill_full", "vision_stock_over_fast", "audio_stock_over_fast",
}


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def json_lines(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    records = []
    for line in lines:
        record = json.loads(line)  # every printed line is JSON
        assert isinstance(record, dict) and record, line
        records.append(record)
    return records


def load_model_stages():
    name = "omnizip_benchmark_model_stages"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "model_stages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``benchmarks/gpu_suite.sh --tiny`` run once; its output folder (shared by the tests below)."""
    out = tmp_path_factory.mktemp("gpu-suite")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--tiny", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    (out / "suite.stderr").write_text(proc.stderr)
    return out


def read_records(path: Path) -> list[dict]:
    assert path.exists(), f"{path.name} is missing"
    return json_lines(path.read_text())


# The record kinds each step of the GPU run writes; the --tiny dry run must write every one of them.
SUITE_KINDS = {
    "gpu_tests": {"test", "tests"},
    "model_stages": {"setup", "clip", "stage", "equivalence", "ratio"},
    "model_stages_qwen3": {"setup", "clip", "stage", "equivalence", "ratio"},
    "decode_speed": {"setup", "warmup", "run", "decode", "equivalence", "ratio"},
    "session": {"setup", "clip", "open", "question", "ratio"},
    "preprocess": {"setup", "run", "equivalence", "summary"},
    "ask_e2e": {"setup", "ask", "ratio"},
    "quantized": set(),  # "quantized", or "skipped" where torchao is missing (checked below)
    "multi_gpu": {"multi_gpu"},
    "suite": {"plan", "step", "summary"},
}
# The order of value: the 7B stages and decode first, Qwen3-Omni 30B-A3B last.
SUITE_ORDER = ["model_stages", "decode_speed", "session", "gpu_tests", "preprocess", "ask_e2e", "quantized", "multi_gpu",
         "model_stages_qwen3"]


@pytest.mark.slow
def test_gpu_suite_tiny(suite: Path) -> None:
    """Every step ran and passed, and wrote every record kind the GPU run writes."""
    steps = read_records(suite / "suite.jsonl")
    ran = {r["step"]: r for r in steps if r["kind"] == "step"}
    assert set(ran) == set(SUITE_KINDS) - {"suite"}, (suite / "suite.stderr").read_text()[-3000:]
    assert [r["step"] for r in steps if r["kind"] == "step"] == SUITE_ORDER
    for name, record in ran.items():
        log = (suite / f"{name}.log").read_text()
        assert record["rc"] == 0 and record["mode"] == "tiny", f"{name} failed:\n{log[-3000:]}"
        assert record["timed_out"] is False and record["seconds"] <= record["limit_s"]
    for name, kinds in SUITE_KINDS.items():
        records = read_records(suite / f"{name}.jsonl")
        assert kinds <= {r["kind"] for r in records}, (name, kinds - {r["kind"] for r in records})
        bench = "gpu_suite" if name == "suite" else name.removesuffix("_qwen3")
        assert all(r["bench"] == bench for r in records), name
    (summary,) = [r for r in steps if r["kind"] == "summary"]
    assert summary["failed_steps"] == 0
    quantized = read_records(suite / "quantized.jsonl")
    assert quantized and {r["kind"] for r in quantized} <= {"quantized", "skipped"}
    for record in quantized:
        assert record["weights_bytes"] < record["unquantized_bytes"] if record["kind"] == "quantized" else \
            "torchao is not installed" in record["reason"]
    (split,) = read_records(suite / "multi_gpu.jsonl")
    assert split["same_tokens"] and set(split["devices"]) == {"cpu", "disk"}
    tests = [r for r in read_records(suite / "gpu_tests.jsonl") if r["kind"] == "test"]
    assert tests and not [t for t in tests if t["outcome"] in ("failed", "error")], tests


@pytest.mark.slow
def test_session_tiny(suite: Path) -> None:
    """5 questions on one session (questions 2-5 prefill only their own tokens), cold / reopen / full."""
    records = read_records(suite / "session.jsonl")
    questions = [r for r in records if r["kind"] == "question" and r["variant"] == "cold"]
    assert [q["question"] for q in questions] == [1, 2, 3, 4, 5]
    first, *later = questions
    assert first["prefix_source"] == "fresh"
    for q in later:
        assert q["prefix_source"] == "memory" and q["prefilled_tokens"] < first["prefilled_tokens"] / 10
        assert q["first_token_s"] > 0
    opens = {r["variant"]: r for r in records if r["kind"] == "open"}
    assert set(opens) == {"cold", "reopen", "full"}
    # the suite measures the reopen through the disk cache the cold open wrote (issue 29, item 21)
    assert opens["reopen"]["reopen_kind"] == "disk_cache" and opens["reopen"]["prefix_source"] == "disk"
    assert opens["reopen"]["disk_entry_bytes"] > 0 and opens["reopen"]["disk_load_s"] > 0
    (reopened,) = [r for r in records if r["kind"] == "question" and r["variant"] == "reopen"]
    assert reopened["prefix_source"] == "disk"
    assert opens["full"]["prefix_tokens_after"] == opens["full"]["prefix_tokens_before"]
    assert opens["cold"]["prefix_tokens_after"] < opens["cold"]["prefix_tokens_before"]
    for variant in ("cold", "full"):  # the disk reopen runs none of them
        assert {"media_decode", "preprocess", "vision_encoder", "audio_encoder"} <= opens[variant]["stages_s"].keys()
    ratios = {r["name"]: r for r in records if r["kind"] == "ratio"}
    assert {"ttft_followups_over_q1", "reopen_over_cold", "file_to_first_token_full_over_compressed",
            *(f"ttft_q{i}_over_q1" for i in range(2, 6))} <= ratios.keys()
    assert ratios["ttft_followups_over_q1"]["target"] == 0.05 and ratios["reopen_over_cold"]["target"] == 0.15
    assert ratios["reopen_over_cold"]["reopen_kind"] == "disk_cache"
    assert all(r["meets_target"] is None for r in ratios.values())  # GPU targets: not judged on the CPU


@pytest.mark.slow
def test_preprocess_device_path_tiny(suite: Path) -> None:
    records = read_records(suite / "preprocess.jsonl")
    (equivalence,) = [r for r in records if r["kind"] == "equivalence"]
    assert equivalence["within_bound"] and equivalence["other_tensors_equal"]
    assert equivalence["fused_bitwise_equal"]  # the one-pass CPU path is bitwise the stock processor (issue 28)
    assert {r["variant"] for r in records if r["kind"] == "run"} == {"stock", "fused", "device"}


@pytest.mark.slow
def test_decode_speed_tiny(suite: Path) -> None:
    records = read_records(suite / "decode_speed.jsonl")
    decodes = {(r["context"], r["path"]) for r in records if r["kind"] == "decode"}
    assert decodes == {(c, p) for c in (256, 96) for p in ("stock_generate", "eager_loop", "fast")}
    # every timed run has its own line, written as it ends (a run cut short keeps them)
    runs = [(r["context"], r["path"], r["repeat"]) for r in records if r["kind"] == "run"]
    assert sorted(runs) == sorted((c, p, 0) for c, p in decodes)
    for record in records:
        if record["kind"] == "equivalence":  # float32 tiny model: every path gives the same greedy tokens
            assert record["greedy_tokens_equal_fast_eager"] and record["greedy_tokens_equal_eager_stock"]


@pytest.mark.slow
@pytest.mark.parametrize(("step", "model", "family", "audio_rate"), [
    ("model_stages", "tiny", "qwen2.5", 25), ("model_stages_qwen3", "tiny-qwen3", "qwen3", 13),
])
def test_model_stages_tiny(suite: Path, step: str, model: str, family: str, audio_rate: int) -> None:
    records = read_records(suite / f"{step}.jsonl")
    assert all(r["bench"] == "model_stages" and r["family"] == family for r in records)
    kinds = {r["kind"] for r in records}
    assert {"setup", "clip", "stage", "equivalence", "ratio"} <= kinds

    (setup,) = [r for r in records if r["kind"] == "setup"]
    assert setup["model"] == model and setup["device"] == "cpu" and setup["parameters"] > 0
    assert setup["audio_tokens_per_second"] == audio_rate
    for key in ("torch", "transformers", "fast_attention_backend", "repeats"):
        assert key in setup

    stages = [r for r in records if r["kind"] == "stage"]
    for record in stages:
        assert STAGE_KEYS <= record.keys(), STAGE_KEYS - record.keys()
        assert 0 <= record["best_s"] <= record["median_s"]
        assert len(record["runs_s"]) == setup["repeats"]
    clips = {r["clip_seconds"] for r in stages}
    assert clips
    for seconds in clips:
        assert EXPECTED_STAGES <= {(r["stage"], r["variant"]) for r in stages if r["clip_seconds"] == seconds}

    equivalence = [r for r in records if r["kind"] == "equivalence"]
    assert {r["what"] for r in equivalence} == {"vision_encoder", "audio_encoder"}
    for record in equivalence:  # float32 on the CPU: the fast path equals stock within 1e-5
        assert record["bound"] == 1e-5 and record["within_bound"] and record["fast_applied"], record

    ratios = [r for r in records if r["kind"] == "ratio"]
    assert EXPECTED_RATIOS <= {r["name"] for r in ratios}
    for record in ratios:
        assert {"name", "value", "target", "meets_target", "formula", "clip_seconds"} <= record.keys()
        assert record["value"] >= 0

    prefill_tokens = {r["variant"]: r["prefill_tokens"] for r in stages if r["stage"] == "prefill"}
    assert prefill_tokens["35"] < prefill_tokens["45"] < prefill_tokens["full"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_model_stages_refuses_full_size_on_cpu(family: str) -> None:
    proc = run_script("benchmarks/model_stages.py", "--family", family, "--seconds", "30")
    assert proc.returncode == 2
    assert "--tiny" in proc.stderr and proc.stdout == ""
    assert ("30B-A3B" in proc.stderr) == (family == "qwen3")


def test_model_stages_size_is_qwen2_5_only() -> None:
    bench = load_model_stages()
    assert bench.parse_args([]).size == "7b" and bench.parse_args(["--family", "qwen3"]).size is None
    with pytest.raises(SystemExit):
        bench.parse_args(["--family", "qwen3", "--size", "7b"])


def test_model_stages_layout_matches_processor(tiny_cpu_model: Any) -> None:
    """The synthetic audio-in-video token layout equals the stock processor's, on the tiny checkpoint."""
    from tests.helpers.synthetic import synthetic_media

    bench = load_model_stages()
    config = tiny_cpu_model.model.config
    for seconds, (height, width) in ((6, (224, 392)), (9, (168, 252))):
        media = synthetic_media(seconds, seconds, height=height, width=width)
        tensors = tiny_cpu_model.adapter.prepare(tiny_cpu_model.processor, media, question="Why?").tensors
        grid = tuple(int(x) for x in tensors["video_grid_thw"][0].tolist())
        second_per_grid = float(tensors["video_second_per_grid"][0])
        mel_frames = int(tensors["feature_attention_mask"].sum())
        audio_tokens = ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1
        ids = tensors["input_ids"][0].tolist()
        start = ids.index(config.vision_start_token_id)
        end = ids.index(config.vision_end_token_id) + 1
        assert ids[start:end] == bench.media_token_ids(config, grid, second_per_grid, audio_tokens)

    # and the benchmark's own clip at the default budget: 112 video + 25 audio tokens per second
    clip = bench.synthesize_clip(config, 6, 2.0, 112, "cpu")
    assert clip.grid_thw == (6, 16, 28) and clip.frame_px == (224, 392)
    ids = clip.inputs.input_ids[0]
    assert int((ids == config.video_token_id).sum()) == clip.video_tokens == 6 * 112
    assert int((ids == config.audio_token_id).sum()) == clip.audio_tokens == 6 * 25


def test_model_stages_qwen3_layout_matches_processor() -> None:
    """``--family qwen3``: the synthetic block (video and audio merge-sorted by time, 13 ids per second)
    equals ``Qwen3OmniMoeProcessor``'s on the tiny-qwen3 checkpoint, audio shorter / longer than the
    video and at 3 fps (fractional time ids) included."""
    from omnizip_cli.measure import StageTimer
    from omnizip_cli.models.registry import ModelSpec, load_model

    from tests.helpers.synthetic import synthetic_media

    bench = load_model_stages()
    loaded = load_model(ModelSpec(model="tiny-qwen3", device="cpu", dtype="float32"))
    config = loaded.model.config
    assert bench.family_of(config) == "qwen3"
    cases = ((6, 6.0, 2.0, (256, 448)), (6, 9.0, 2.0, (168, 252)), (6, 4.3, 3.0, (168, 252)))
    for video_s, audio_s, fps, (height, width) in cases:
        media = synthetic_media(video_s, audio_s, fps=fps, height=height, width=width)
        tensors = loaded.adapter.prepare(loaded.processor, media, question="Why?").tensors
        grid = tuple(int(x) for x in tensors["video_grid_thw"][0].tolist())
        # the processor places tokens with the Python float (the tensor holds it rounded to float32,
        # which moves ties at 3 fps: 3 grid steps of 2/3 s are 26 time ids, not 26.0000003)
        second_per_grid = config.vision_config.temporal_patch_size / fps
        assert abs(float(tensors["video_second_per_grid"][0]) - second_per_grid) < 1e-6
        audio_tokens = bench.audio_token_count(config, int(tensors["feature_attention_mask"].sum()))
        ids = tensors["input_ids"][0].tolist()
        assert ids.count(config.audio_token_id) == audio_tokens, (video_s, audio_s, fps)
        start = ids.index(config.vision_start_token_id)
        end = ids.index(config.vision_end_token_id) + 1
        assert ids[start:end] == bench.media_token_ids(config, grid, second_per_grid, audio_tokens), (
            video_s, audio_s, fps)

    # the benchmark's own clip at the default budget: 112 video tokens (32-px tokens) + 13 audio per second
    clip = bench.synthesize_clip(config, 6, 2.0, 112, "cpu")
    assert clip.grid_thw == (6, 16, 28) and clip.frame_px == (256, 448)
    ids = clip.inputs.input_ids[0]
    assert int((ids == config.video_token_id).sum()) == clip.video_tokens == 6 * 112
    assert int((ids == config.audio_token_id).sum()) == clip.audio_tokens == 6 * 13
    assert clip.inputs.tensors["pixel_values_videos"].shape == (6 * 16 * 28, 3 * 2 * 16 * 16)
    # and the adapter encodes it: one windowed saliency score per audio token, deepstack per video token
    encoded = loaded.adapter.encode(loaded.model, clip.inputs, record_saliency=True, timer=StageTimer())
    assert encoded.audio_scores.numel() == clip.audio_tokens
    assert all(layer.shape[0] == clip.video_tokens for layer in encoded.extras["deepstack"])


def test_full_size_configs_have_the_stated_dimensions() -> None:
    bench = load_model_stages()
    seven, three = bench.full_thinker_config("7b"), bench.full_thinker_config("3b")
    assert (seven.text_config.num_hidden_layers, seven.text_config.hidden_size) == (28, 3584)
    assert (seven.text_config.num_attention_heads, seven.text_config.num_key_value_heads) == (28, 4)
    assert (seven.text_config.intermediate_size, seven.text_config.vocab_size) == (18944, 152064)
    assert (three.text_config.num_hidden_layers, three.text_config.hidden_size) == (36, 2048)
    assert (three.text_config.num_attention_heads, three.text_config.num_key_value_heads) == (16, 2)
    assert (three.text_config.intermediate_size, three.text_config.vocab_size) == (11008, 151936)
    for config, out in ((seven, 3584), (three, 2048)):
        assert config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]
        vision, audio = config.vision_config, config.audio_config
        assert (vision.depth, vision.hidden_size, vision.num_heads, vision.intermediate_size) == (32, 1280, 16, 3420)
        assert vision.fullatt_block_indexes == [7, 15, 23, 31] and vision.out_hidden_size == out
        assert (audio.encoder_layers, audio.d_model, audio.encoder_attention_heads, audio.encoder_ffn_dim) == (
            32, 1280, 20, 5120,
        )
        assert audio.output_dim == out and audio.n_window == 100
    # parameter count of the 7B thinker, from the shapes alone (meta device: nothing allocated)
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration

    counts = {}
    for name, config in (("7b", seven), ("3b", three)):
        with torch.device("meta"):
            model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config)
        counts[name] = sum(p.numel() for p in model.parameters())
    assert abs(counts["7b"] / 1e9 - 8.93) < 0.01, counts
    assert abs(counts["3b"] / 1e9 - 4.70) < 0.01, counts


def test_qwen3_30b_a3b_config_has_the_stated_dimensions() -> None:
    """``--family qwen3``: the Qwen3-Omni 30B-A3B thinker of ``qwen3_configs.py`` (meta device: nothing allocated)."""
    from benchmarks.qwen3_configs import parameter_count, qwen3_omni_30b_a3b_thinker_config

    config = qwen3_omni_30b_a3b_thinker_config()
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (
        48, 2048, 32, 4)
    assert (text.num_experts, text.num_experts_per_tok, text.moe_intermediate_size, text.vocab_size) == (
        128, 8, 768, 152064)
    assert text.rope_parameters["mrope_section"] == [24, 20, 20]
    assert (vision.depth, vision.hidden_size, vision.patch_size, vision.spatial_merge_size) == (27, 1152, 16, 2)
    assert vision.deepstack_visual_indexes == [8, 16, 24] and vision.out_hidden_size == 2048
    assert (audio.encoder_layers, audio.d_model, audio.encoder_attention_heads, audio.n_window) == (32, 1280, 20, 50)
    assert (config.position_id_per_seconds, config.audio_token_id) == (13, 151675)
    counts = parameter_count(config)
    assert abs(counts["total"] / 1e9 - 31.72) < 0.01, counts
    assert abs((counts["language_model"] + counts["lm_head"]) / 1e9 - 30.53) < 0.01, counts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "smoke_flag"),
    [("keep_plan.py", "--quick"), ("media_decode.py", "--quick"), ("saliency_memory.py", "--quick")],
)
def test_other_benchmarks_quick(script: str, smoke_flag: str) -> None:
    path = BENCHMARKS / script
    assert path.exists(), f"benchmarks/{script} is missing"
    proc = run_script(f"benchmarks/{script}", smoke_flag)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = json_lines(proc.stdout)
    expected = script.removesuffix(".py")
    for record in records:
        if "bench" in record:
            assert record["bench"] == expected, record


@pytest.mark.slow
def test_serve_tiny() -> None:
    """``benchmarks/serve.py --tiny``: a real server process, question 1 fresh then from memory, 1 and 4
    concurrent clients all answered, the ratios, SIGTERM exits 0."""
    proc = run_script("benchmarks/serve.py", "--tiny")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = json_lines(proc.stdout)
    assert all(r["bench"] == "serve" for r in records)
    (setup,) = [r for r in records if r["kind"] == "setup"]
    assert setup["model"] == "tiny" and setup["concurrency"] == [1, 4] and setup["replicas"] == 1
    assert setup["compared_replicas"] == [1] and setup["videos"] == 1
    (server,) = [r for r in records if r["kind"] == "server"]
    assert server["replicas"] == 1 and server["ready_s"] > 0 and server["model"] == "tiny"
    questions = [r for r in records if r["kind"] == "question"]
    assert [q["question"] for q in questions] == [1, 2, 3, 4] and {q["video"] for q in questions} == {0}
    assert [q["prefix_source"] for q in questions] == ["fresh", "memory", "memory", "memory"]
    assert questions[0]["cached_tokens"] == 0 and all(q["cached_tokens"] > 0 for q in questions[1:])
    assert all(0 < q["ttft_s"] <= q["total_s"] and q["replica"] is None for q in questions)
    levels = {r["clients"]: r for r in records if r["kind"] == "concurrency"}
    assert set(levels) == {1, 4}
    for record in levels.values():
        assert record["answered"] == record["requests"] == 8 and record["refused_429"] == record["failed"] == 0
        assert record["requests_per_second"] > 0 and 0 < record["ttft_s_median"] <= record["latency_s_median"]
        assert record["prefix_sources"] == ["memory"]
    ratios = {r["name"]: r for r in records if r["kind"] == "ratio"}
    assert set(ratios) == {"ttft_repeated_over_first", "requests_per_second_4_over_1_clients", "ttft_4_over_1_clients"}
    assert all(r["value"] > 0 and r["meets_target"] is None and r["replicas"] == 1 for r in ratios.values())
    (route,) = [r for r in records if r["kind"] == "routing"]
    assert route["affinity"] and route["distinct_prefixes"] == 1
    (shutdown,) = [r for r in records if r["kind"] == "shutdown"]
    assert shutdown["exit_code"] == 0 and shutdown["stopped_line"] and shutdown["refused_total"] == 0
    assert shutdown["leftover_processes"] == 0


@pytest.mark.slow
def test_serve_tiny_replicas() -> None:
    """``benchmarks/serve.py --tiny --replicas 2`` (local Ray Serve, two CPU replicas): the same load
    on one process then on 2 replicas; 4 videos spread over both replicas, each video's questions
    stay on one replica (from memory after the first), and the 2-over-1 ratios."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'omnizip[serve-ray]')")
    proc = run_script("benchmarks/serve.py", "--tiny", "--replicas", "2", "--concurrency", "4")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = json_lines(proc.stdout)
    assert all(r["bench"] == "serve" for r in records)
    (setup,) = [r for r in records if r["kind"] == "setup"]
    assert setup["replicas"] == 2 and setup["compared_replicas"] == [1, 2] and setup["videos"] == 4
    servers = {r["replicas"]: r for r in records if r["kind"] == "server"}
    assert set(servers) == {1, 2}
    assert servers[2]["replicas_listed"] == 2 and servers[2]["replica_states"] == ["running"]
    assert len(set(servers[2]["replica_pids"])) == 2
    for replicas in (1, 2):
        questions = [r for r in records if r["kind"] == "question" and r["replicas"] == replicas]
        assert len(questions) == 4 * 4 and {q["video"] for q in questions} == {0, 1, 2, 3}
        assert [q["prefix_source"] for q in questions] == ["fresh"] * 4 + ["memory"] * 12
        (level,) = [r for r in records if r["kind"] == "concurrency" and r["replicas"] == replicas]
        assert level["clients"] == 4 and level["answered"] == level["requests"] == 8 and level["failed"] == 0
        assert level["prefix_sources"] == ["memory"] and level["requests_per_second"] > 0
        (route,) = [r for r in records if r["kind"] == "routing" and r["replicas"] == replicas]
        assert route["affinity"] and route["distinct_prefixes"] == 4
        assert all(v["answers"] == 6 and v["fresh"] == 1 for v in route["per_video"])
        (shutdown,) = [r for r in records if r["kind"] == "shutdown" and r["replicas"] == replicas]
        assert shutdown["exit_code"] == 0 and shutdown["stopped_line"] and shutdown["leftover_processes"] == 0
    (route,) = [r for r in records if r["kind"] == "routing" and r["replicas"] == 2]
    assert route["replicas_answered"] == 2 and route["unknown_replicas"] == []
    assert all(len(v["replicas"]) == 1 for v in route["per_video"])
    assert {v["replicas"][0] for v in route["per_video"]} == set(route["replica_ids"])
    assert level["replicas_answered"] == 2
    ratios = {r["name"]: r for r in records if r["kind"] == "ratio" and r.get("over_replicas") == 1}
    assert set(ratios) == {"ttft_repeated_2_over_1_replicas", "requests_per_second_2_over_1_replicas_4_clients",
                           "ttft_2_over_1_replicas_4_clients"}
    assert all(r["value"] > 0 and r["replicas"] == 2 and r["meets_target"] is None for r in ratios.values())


@pytest.mark.parametrize("flags", [("--replicas", "0"), ("--videos", "0"),
                                   ("--replicas", "2", "--videos", "2", "--video", "samples/speech.wav")])
def test_serve_usage_errors(flags: tuple[str, ...]) -> None:
    proc = run_script("benchmarks/serve.py", *flags)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "usage:" in proc.stderr


@pytest.mark.slow
def test_long_video_quick() -> None:
    proc = run_script("benchmarks/long_video.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = json_lines(proc.stdout)
    assert all(r["bench"] == "long_video" for r in records)
    pre = [r for r in records if r["kind"] == "preprocess"]
    assert {(r["frames"], r["variant"]) for r in pre} == {(8, "stock"), (8, "chunked"), (16, "stock"), (16, "chunked")}
    for r in pre:
        assert r["peak_rss_bytes"] > r["base_rss_bytes"] > 0 and r["wall_s"] > 0
        assert r["frame_px"] == "1008x560" and r["video_tokens"] == r["frames"] // 2 * 720
    assert all(r["estimate_peak_bytes"] > 0 for r in pre if r["variant"] == "chunked")
    assert [r["bitwise_equal"] for r in records if r["kind"] == "equivalence"] == [True, True]
    sal = {(r["audio_seconds"], r["variant"]): r for r in records if r["kind"] == "saliency"}
    assert set(sal) == {(20.0, "before"), (20.0, "after"), (40.0, "before"), (40.0, "after")}
    assert sal[(20.0, "after")]["scheme"] == "global" and sal[(40.0, "after")]["scheme"] == "windowed"


def test_versus_stock_pixel_difference(tmp_path: Path) -> None:
    """``preprocess.py --versus-stock``'s ``pixels`` record: the two sides' first temporal step mapped
    back to pixel levels with the processor's mean and std (the stock side needs its own
    environment, so the comparison is checked here on known arrays)."""
    import numpy as np

    spec = importlib.util.spec_from_file_location("omnizip_benchmark_preprocess", BENCHMARKS / "preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from omnizip_cli.models.qwen2_5_omni import ADAPTER

    video = ADAPTER.tiny_processor().video_processor
    mean = np.asarray(video.image_mean, dtype=np.float32).reshape(1, 3, 1)
    std = np.asarray(video.image_std, dtype=np.float32).reshape(1, 3, 1)
    levels = np.random.default_rng(0).integers(1, 254, size=(6, 3, 392)).astype(np.float32)
    normalised = ((levels / 255.0 - mean) / std).reshape(6, -1)
    brighter = (((levels + 1.0) / 255.0 - mean) / std).reshape(6, -1)
    np.save(tmp_path / "stock.npy", normalised)
    np.save(tmp_path / "same.npy", normalised)
    np.save(tmp_path / "brighter.npy", brighter)
    same = module.pixel_difference(tmp_path / "stock.npy", tmp_path / "same.npy")
    assert same["psnr_db"] == float("inf") and same["equal_share"] == 1.0 and same["rows"] == 6
    off = module.pixel_difference(tmp_path / "stock.npy", tmp_path / "brighter.npy")
    assert off["mean_abs_levels"] == pytest.approx(1.0, abs=1e-3) and off["max_abs_levels"] == pytest.approx(1.0)
    assert off["mean_signed_levels_rgb"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    assert off["psnr_db"] == pytest.approx(48.13, abs=0.01) and off["equal_share"] == 0.0
    assert "skipped" in module.pixel_difference(tmp_path / "stock.npy", tmp_path / "missing.npy")
