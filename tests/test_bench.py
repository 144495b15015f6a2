"""The benchmark scripts run (smoke test; their numbers are not asserted)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def test_layers_benchmark_writes_its_table(tmp_path):
  out = tmp_path / "layers.json"
  env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device, as a user runs it
  result = subprocess.run([sys.executable, str(ROOT / "bench" / "layers.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "ratio" in result.stdout
  data = json.loads(out.read_text())
  assert {"bcos_forward_ms", "plain_forward_ms", "fwd_bwd_ratio"} <= set(data["layers"][0])
  assert data["explain"]["explain_ms"] > 0


def test_input_pipeline_benchmark_writes_its_table(tmp_path):
  # The other recipes' rows: the v1 recipe's two are measured by bench/gpu.sh --tiny below.
  out = tmp_path / "input_pipeline.json"
  result = subprocess.run([sys.executable, str(ROOT / "bench" / "input_pipeline.py"),
                           "--seconds", "0.3", "--workers", "1", "--recipes",
                           "cifar10,bcos_final", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(out.read_text())["rows"]
  assert [r["recipe"] for r in rows] == ["cifar10", "bcos_final"]
  assert all(r["transform_per_worker"] > 0 and r["pipeline_per_worker"] > 0 for r in rows)
  bad = subprocess.run([sys.executable, str(ROOT / "bench" / "input_pipeline.py"), "--recipes",
                        "imagenet_v1,imagenet_v2"], capture_output=True, text=True, timeout=600,
                       check=False)
  assert bad.returncode != 0 and "unknown imagenet_v2; known: imagenet_v1," in bad.stderr


def test_gpu_script_runs_tiny_and_its_throughput_has_the_mfu(tmp_path):
  # bench/gpu.sh --tiny is what is run on a CPU before any GPU time is spent; here on one
  # small model (and without the official side where `bcos` is not installed, as in CI).
  env = {**os.environ, "XLA_FLAGS": "", "BENCH_MODELS": "v1_cifar9l_b2:16",
         "PYTHON": sys.executable, "PEAK_TFLOPS_FP32": "0.1", "PEAK_TFLOPS_BF16": "0.1"}
  result = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), str(tmp_path), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  for dtype in ("float32", "bfloat16"):
    data = json.loads((tmp_path / f"throughput_v1_cifar9l_b2_{dtype}.json").read_text())
    assert {"train_step_ms", "forward_ms", "explain_ms", "images_per_s", "peak_bytes",
            "train_step_flops", "mfu"} <= set(data)
    assert data["compute_dtype"] == dtype and data["train_step_flops"] > 0 and data["mfu"] > 0
  memory = json.loads((tmp_path / "memory.json").read_text())
  assert [row["remat"] for row in memory["rows"]] == [True]  # --tiny: one compile
  pipeline = json.loads((tmp_path / "input_pipeline.json").read_text())
  assert [row["recipe"] for row in pipeline["rows"]] == ["imagenet_v1", "imagenet_v1_device"]
  assert set(pipeline["workers_needed"]) == {"imagenet_v1", "imagenet_v1_device"}
  assert list(pipeline["v1_stage_ms"]) == ["decode", "crop", "geometric_ops", "colour_ops",
                                           "flip_jitter_lighting", "total"]
  assert pipeline["v1_stage_ms"]["total"] > 0
  assert pipeline["accelerator_images_per_s"] > 0
  if importlib.util.find_spec("bcos") is None:
    assert "vs official: skipped" in result.stdout


def test_explainers_benchmark_writes_its_table(tmp_path):
  out = tmp_path / "explainers.json"
  env = {**os.environ, "XLA_FLAGS": ""}
  result = subprocess.run([sys.executable, str(ROOT / "bench" / "explainers.py"), "--models",
                           "v1_cifar9l_b2:16", "--methods", "bcos,occ9_ti,lime", "--images",
                           "1", "--repeats", "1", "--lime_samples", "10", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(out.read_text())["rows"]
  assert [r["method"] for r in rows] == ["bcos", "occ9_ti", "lime"]
  assert all(r["ms_per_image"] > 0 for r in rows)


def test_vs_official_benchmark_times_ours_and_names_the_official_install(tmp_path):
  out = tmp_path / "vs_official.json"
  env = {**os.environ, "XLA_FLAGS": ""}
  command = [sys.executable, str(ROOT / "bench" / "vs_official.py"), "--models",
             "v1_cifar9l_b2:16:2", "--rounds", "2", "--steps", "1", "--json", str(out)]
  result = subprocess.run([*command, "--ours_only"], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  row = json.loads(out.read_text())["rows"][0]
  assert set(row["ours_ms"]) == {"train_step", "forward", "explain", "explain_one"}
  assert all(len(times) == 2 and min(times) > 0 for times in row["ours"].values())
  bad = subprocess.run([*command[:3], "resnet50:224"], capture_output=True, text=True, env=env,
                       timeout=600, check=False)
  assert bad.returncode == 2 and "not NAME:IMAGE_SIZE:BATCH" in bad.stderr
  if importlib.util.find_spec("bcos") is None:  # CI: the official side is optional tooling
    missing = subprocess.run([*command[:3], "resnet50:32:2", *command[4:]], capture_output=True,
                             text=True, env=env, timeout=600, check=False)
    assert missing.returncode == 2 and "pip install bcos torch torchvision" in missing.stderr


def _without_torch(script: str, *args: str) -> subprocess.CompletedProcess:
  """bench/`script` with `import torch` failing, as where torch is not installed."""
  script = ROOT / "bench" / script
  code = ("import runpy, sys; sys.modules['torch'] = None; "  # `import torch` raises ImportError
          f"sys.path.insert(0, {str(script.parent)!r}); "
          f"sys.argv = [{str(script)!r}, *sys.argv[1:]]; "
          f"runpy.run_path({str(script)!r}, run_name='__main__')")
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        env={**os.environ, "XLA_FLAGS": ""}, timeout=600, check=False)


def test_vs_official_v1_model_without_v1_repo_names_the_flag_and_the_clone(tmp_path):
  # The check comes before torch is imported: with torch unimportable, the error is still
  # about --v1_repo, not about installing torch.
  result = _without_torch("vs_official.py", "--models", "v1_cifar9l_b2:32:2", "--json",
                                      str(tmp_path / "out.json"))
  assert result.returncode == 2, result.stderr[-2000:]
  message = result.stderr.strip().splitlines()[-1]
  assert "v1_cifar9l_b2" in message and "--v1_repo" in message
  assert "git clone https://github.com/moboehle/B-cos" in message
  not_a_checkout = _without_torch("vs_official.py", "--models", "v1_cifar9l_b2:32:2", "--v1_repo",
                                              str(tmp_path), "--json", str(tmp_path / "out.json"))
  assert not_a_checkout.returncode == 2
  assert "experiments/CIFAR10/bcos/model.py" in not_a_checkout.stderr


def test_conv_floor_times_each_linear_op_and_names_the_torch_install(tmp_path):
  out = tmp_path / "conv_floor.json"
  result = _without_torch("conv_floor.py", "--models", "v1_cifar9l_b2:16:2", "--count", "1",
                          "--ours_only", "--json", str(out))
  assert result.returncode == 0, result.stderr[-2000:]
  run = json.loads(out.read_text())["results"][0]
  # The 9 B-cos layers of the v1 CIFAR net (the last, 1×1, as a matrix product), each with
  # its input and weight gradient (the first layer's input gradient is the explanation's W(x)).
  assert run["ops"] == sum(row["uses"] for row in run["rows"]) == 9
  assert sorted(row["op"].split()[0] for row in run["rows"]) == ["conv"] * 6 + ["dot"]
  assert all(min(row["xla_ms"].values()) > 0 for row in run["rows"])
  assert run["totals_ms"]["xla"]["dgrad"] > 0
  missing = _without_torch("conv_floor.py", "--models", "v1_cifar9l_b2:16:2", "--json",
                           str(out))
  assert missing.returncode == 2 and "pip install torch" in missing.stderr
