"""The faster step's parts keep the arithmetic: the patch embedding as a matmul over the kept tokens,
AdamW's implementations, the compile option, the benchmark's configurations and variants, the GPU
check's refusal without a GPU, and the time-to-quality curves of the summaries.

Fast (tiny tensors, synthetic histories) except the end-to-end ones marked slow. Rates are not
asserted: they come from ``python -m benchmarks.throughput``."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import gpu_check, throughput
from eolab.data.bands import S2_L1C
from eolab.data.stats import Normalization
from eolab.models import attention as attn_mod
from eolab.models.tokenizers import PatchTokenizer
from eolab.models.vit import build_encoder
from eolab.reports import history as history_report
from eolab.reports import runs as runs_report
from eolab.tasks import TaskParams, build_task
from eolab.train import ADAMW_IMPLS, adamw, adamw_impl, fit

matplotlib.use("Agg")

BANDS = ("B02", "B03", "B04", "B08")


def test_matmul_patch_embedding_is_the_convolution_on_the_kept_tokens():
    """Same weights, same tokens: the matmul path embeds only the kept patches, and they equal the
    convolution's tokens at those positions; gradients reach the same (conv-shaped) weight."""
    torch.manual_seed(0)
    tok = PatchTokenizer(S2_L1C[:5], img_size=16, patch_size=4, dim=32)
    image = torch.randn(3, 5, 16, 16)
    keep = torch.rand(3, tok.num_tokens).argsort(1)[:, :4].sort(1).values  # (B, K)
    tok.embed_as = "conv"
    conv_all, conv_kept = tok(image), tok(image, keep=keep)
    tok.embed_as = "matmul"
    matmul_all, matmul_kept = tok(image), tok(image, keep=keep)
    assert matmul_kept.shape == (3, 4, 32) and matmul_all.shape == (3, tok.num_tokens, 32)
    torch.testing.assert_close(matmul_all, conv_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matmul_kept, conv_kept, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matmul_kept, torch.gather(conv_all, 1, keep[..., None].expand(-1, -1, 32)))
    matmul_kept.sum().backward()
    assert tok.proj.weight.grad.shape == tok.proj.weight.shape and tok.proj.weight.grad.abs().sum() > 0


def test_encoder_gives_the_same_tokens_with_either_embedding():
    torch.manual_seed(0)
    enc = build_encoder("vit_nano", BANDS, img_size=16, patch_size=4)
    image, keep = torch.randn(2, 4, 16, 16), torch.tensor([[0, 3, 5, 9], [1, 2, 14, 15]])
    a = enc(image, keep=keep)
    enc.tokenizer.embed_as = "conv"
    torch.testing.assert_close(enc(image, keep=keep), a, rtol=1e-5, atol=1e-5)
    assert a.shape == (2, 5, enc.dim)  # [CLS] + the kept tokens


@pytest.mark.parametrize("impl", [i for i in ADAMW_IMPLS if i != "auto"])
def test_adamw_implementations_take_the_same_steps(impl):
    """fused, foreach and the for-loop are one update: same parameters after a few steps."""
    def train(kind):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
        groups = [{"params": [model[0].weight, model[2].weight], "weight_decay": 0.05},
                  {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}]
        opt = adamw(groups, lr=1e-2, betas=(0.9, 0.95), device="cpu", impl=kind)
        for step in range(5):
            x = torch.randn(32, 8, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()], opt

    reference, _ = train("for-loop")
    params, opt = train(impl)
    for a, b in zip(params, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0
    assert opt.defaults["fused"] is (True if impl == "fused" else None)


def test_adamw_choice_per_device_and_bad_names():
    assert adamw_impl("cuda") == "fused"
    assert adamw_impl("cpu") == "fused"  # measured faster than foreach on CPU (results/throughput)
    assert adamw_impl("meta") == "foreach"
    with pytest.raises(ValueError, match="AdamW implementation must be one of"):
        adamw([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, betas=(0.9, 0.95), device="cpu", impl="fastest")


@pytest.mark.parametrize("lq,lk", [(17, 17), (5, 13)])
def test_short_attention_kernel_is_sdpa_in_values_and_gradients(lq, lk):
    """The plain kernel (kept probabilities, its own backward) against SDPA: outputs and the
    gradients of queries, keys and values, on strided views as a fused qkv projection gives them."""
    torch.manual_seed(0)
    qkv = torch.randn(3, lk, 3, 2, 8, dtype=torch.float64).float()  # (B, L, 3, H, hd)
    base = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, L, hd): non-contiguous views
    grads = []
    for kernel in ("auto", "sdpa"):
        q, k, v = (t.detach().clone().requires_grad_() for t in base.unbind(0))
        q_rows = q[:, :, :lq]
        assert attn_mod.short_kernel(q_rows, k) and not q_rows.is_contiguous()
        out = attn_mod.attention(q_rows, k, v, kernel=kernel)  # (B, H, Lq, hd)
        weight = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weight).sum().backward()
        grads.append((out.detach(), q.grad, k.grad, v.grad))
    for mine, sdpa in zip(*grads, strict=True):
        torch.testing.assert_close(mine, sdpa, rtol=1e-5, atol=1e-6)


def test_short_attention_kernel_only_where_it_measured_faster():
    q = torch.randn(2, 2, 4, 8)
    long_k = torch.randn(2, 2, attn_mod.SHORT_KEYS + 1, 8)
    assert attn_mod.short_kernel(q, q)
    assert not attn_mod.short_kernel(q, long_k)  # long sequences: SDPA's blocks win
    assert not attn_mod.short_kernel(q, q, dropout_p=0.1)
    assert not attn_mod.short_kernel(q.bfloat16(), q.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not attn_mod.short_kernel(q, q)


def test_attention_layer_keeps_timm_parameters_and_masked_path():
    """Checkpoints of timm's layer load into eolab's and give the same output, with and without a
    mask (masks go to timm's own path)."""
    from timm.layers import Attention as TimmAttention

    torch.manual_seed(0)
    timm_layer, layer = TimmAttention(32, num_heads=4, qkv_bias=True), attn_mod.Attention(32, num_heads=4, qkv_bias=True)
    layer.load_state_dict(timm_layer.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(layer(x), timm_layer(x), rtol=1e-5, atol=1e-6)
    mask = torch.rand(2, 1, 9, 9) > 0.3
    mask[..., 0] = True
    torch.testing.assert_close(layer(x, attn_mask=mask), timm_layer(x, attn_mask=mask))
    enc = build_encoder("vit_nano", BANDS, img_size=16, patch_size=4)
    assert all(isinstance(b.attn, attn_mod.Attention) for b in enc.blocks)


def test_paired_ratio_cancels_what_both_arms_share():
    """A slow phase that hits both arms of a repeat alike drops out of the paired ratio, not out of
    the ratio of medians; the interval is seeded (same timings, same interval)."""
    eolab = [1.0, 1.0, 3.0, 3.0, 3.0]  # a slow phase in the last three repeats
    peer = [1.5, 1.5, 4.5, 4.5, 4.5]  # the peer, 1.5x slower in every repeat
    assert throughput.paired_ratio(peer, eolab) == [1.5, 1.5, 1.5]
    shifted = [1.5, 1.5, 1.5, 4.5, 4.5]  # the slow phase came one repeat later for the peer
    assert throughput.paired_ratio(shifted, eolab)[0] == 1.5
    noisy = [1.4, 1.6, 4.4, 4.7, 4.5]
    median, low, high = throughput.paired_ratio(noisy, eolab)
    assert low <= median <= high and throughput.paired_ratio(noisy, eolab) == [median, low, high]
    with pytest.raises(ValueError, match="same, at least one"):
        throughput.paired_ratio([1.0], [1.0, 2.0])


def test_fit_refuses_an_unknown_compile_scope():
    task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4), TaskParams(decoder_dim=32))
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    with pytest.raises(ValueError, match="compile must be False, True or one of"):
        fit(task, [], norm, batch_size=4, lr=1e-3, compile="everything", accelerator="cpu")


def test_benchmark_configurations_and_variants():
    assert set(throughput.CONFIGS) == {"micro-64", "small-96", "base-224"}
    assert throughput.CONFIGS["micro-64"] == throughput.MAEShape()  # today's benchmark, unchanged
    for name, shape in throughput.CONFIGS.items():
        assert shape.img_size % shape.patch_size == 0 and shape.dim % shape.heads == 0, name
        assert set(throughput.DEFAULT_BATCH[name]) == {"cpu", "cuda"}
    assert throughput.CONFIGS["base-224"].bands == throughput.CONFIGS["small-96"].bands == 12
    arm = throughput.parse_variant("embed=conv+optimizer=for-loop")
    assert arm.model == "eolab" and arm.label == "eolab embed=conv optimizer=for-loop"
    with pytest.raises(Exception, match="embed=matmul|conv"):
        throughput.parse_variant("embed=fft")
    model, _ = throughput.build_eolab(throughput.MAEShape(img_size=16, patch_size=8), attention="sdpa")
    kernels = {m.kernel for m in model.modules() if isinstance(m, attn_mod.Attention)}
    assert kernels == {"sdpa"} and throughput.attention_impl("eolab", model).startswith("sdpa")
    with pytest.raises(SystemExit):
        throughput.build_parser().parse_args(["--configs", "huge-512"])


def test_gpu_check_without_a_gpu_stops_and_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--out", str(tmp_path / "gc")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU visible to torch" in err and "--allow-cpu" in err
    assert not (tmp_path / "gc").exists()  # stopped before any work


def test_gpu_check_dry_run_on_cpu_plans_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--allow-cpu", "--dry-run", "--out", str(tmp_path)]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["tiny"] and plan["pretrain"]["model_size"] == "vit_nano"
    assert all("--quick" in cmd for cmd in plan["bench"])
    assert sorted(gpu_check.GPU_PLAN["configs"]) == ["base-224", "small-96"]
    assert sum(gpu_check.GPU_PLAN["bench_timeout_s"] for _ in gpu_check.GPU_PLAN["configs"]) + gpu_check.GPU_PLAN["pretrain_timeout_s"] < 8 * 60


def test_gpu_check_budget_follows_the_measured_rate():
    bench = {"tables": [{"train": [
        {"model": "eolab", "variant": "", "compiled": False, "achieved_tflops": 50.0},
        {"model": "eolab", "variant": "", "compiled": True, "achieved_tflops": 80.0},
        {"model": "hf", "variant": "", "compiled": True, "achieved_tflops": 99.0},
    ]}]}
    tflops, why = gpu_check.train_budget_tflops(bench, 180, 100.0)
    assert tflops == pytest.approx(0.5 * 80.0 * 180) and "80.00" in why
    tflops, why = gpu_check.train_budget_tflops(None, 100, 10.0)
    assert tflops == pytest.approx(500.0) and "no step rate" in why


def _history(run_id, seconds_per_step, knn):
    """A run's history: probes at steps 1, 10, 20, ... with the given accuracies."""
    steps = [1] + [10 * i for i in range(1, len(knn))]
    rows = [{"run_id": run_id, "step": s, "time_s": s * seconds_per_step, "loss": 1.0 / s, "knn_accuracy": np.nan}
            for s in range(1, steps[-1] + 1)]
    frame = pd.DataFrame(rows)
    frame.loc[frame["step"].isin(steps), "knn_accuracy"] = knn
    return frame


def test_time_to_quality_ranks_arms_by_when_they_reach_a_level():
    """Arm "slow" ends higher, arm "fast" reaches 0.5 first in seconds; FLOPs follow the step."""
    histories = pd.concat([_history("a0", 1.0, [0.2, 0.5, 0.6]), _history("a1", 1.0, [0.2, 0.4, 0.55]),
                           _history("b0", 3.0, [0.2, 0.3, 0.8])])
    arms = {"a0": "fast", "a1": "fast", "b0": "slow"}
    curves = history_report.quality_curves(histories, arms, {"a0": 1e12, "a1": 1e12, "b0": 2e12})
    assert len(curves) == 9 and set(curves["arm"]) == {"fast", "slow"}
    b0 = curves[curves["run_id"] == "b0"]
    assert b0["seconds"].tolist() == [3.0, 30.0, 60.0] and b0["tflops"].tolist() == [2.0, 20.0, 40.0]
    table = history_report.time_to_reach(curves).set_index("arm")
    assert table.loc["fast", "level"] == pytest.approx(0.6)  # the lowest of the arms' best
    assert table.loc["fast", "reached"] == 1 and table.loc["fast", "runs"] == 2  # a1 never got to 0.6
    assert table.loc["fast", "seconds"] == 20 and table.loc["slow", "seconds"] == 60
    at_half = history_report.time_to_reach(curves, level=0.5).set_index("arm")
    assert at_half.loc["fast", "seconds"] == pytest.approx(15.0)  # a0 at step 10, a1 at step 20
    assert at_half.loc["slow", "tflops"] == pytest.approx(40.0)
    assert history_report.plot_time_to_quality(curves) is not None
    assert history_report.quality_curves(histories.drop(columns="knn_accuracy"), arms, {}).empty


def test_summary_time_to_quality_from_a_results_folder(tmp_path):
    """The summary notebook's helpers read arms from the grid and FLOPs from runs.csv."""
    results = tmp_path / "ablation"
    spec = {"name": "objectives", "grid": {"objective": ["mae", "simclr"]}, "seeds": [0]}
    (results / "runs").mkdir(parents=True)
    (results / "spec.json").write_text(json.dumps(spec))
    pd.DataFrame({"run_id": ["objective=mae-seed=0-aaaaaaaaaaaa", "objective=simclr-seed=0-bbbbbbbbbbbb"],
                  "objective": ["mae", "simclr"], "seed": [0, 0], "status": ["done", "done"],
                  "flops_per_step": [1e12, 3e12]}).to_csv(results / "runs.csv", index=False)
    for run_id, knn in (("objective=mae-seed=0-aaaaaaaaaaaa", [0.3, 0.5, 0.6]),
                        ("objective=simclr-seed=0-bbbbbbbbbbbb", [0.3, 0.6, 0.7])):
        (results / "runs" / run_id).mkdir()
        _history(run_id, 1.0, knn).drop(columns="run_id").to_csv(results / "runs" / run_id / "history.csv", index=False)
    loaded = runs_report.load_results(results)
    curves = runs_report.quality_curves(loaded)
    assert set(curves["arm"]) == {"objective=mae", "objective=simclr"}
    assert curves.groupby("arm")["tflops"].max().to_dict() == {"objective=mae": 20.0, "objective=simclr": 60.0}
    table = runs_report.time_to_quality(loaded).set_index("arm")
    assert table.loc["objective=simclr", "seconds"] == 10 and table.loc["objective=mae", "seconds"] == 20
    assert runs_report.plot_time_to_quality(loaded) is not None


@pytest.mark.slow
def test_gpu_check_tiny_cpu_run_writes_its_results(tmp_path, monkeypatch):
    """--allow-cpu without a GPU: the whole script at tiny sizes, real data, a JSON and a README."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--allow-cpu", "--out", str(tmp_path), "--train-seconds", "5"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["tiny"] and report["pretrain"]["status"] == "ok", report["pretrain"]
    assert report["pretrain"]["metrics"]["train_steps"] > 0
    assert [t["config"] for t in report["bench"]["tables"]] == ["micro-64"]
    readme = (tmp_path / "README.md").read_text()
    assert "CPU only" in readme and "images/s" in readme


def test_cpu_clock_needs_one_cpu_thread():
    """--clock cpu counts this process's CPU seconds: meaningful on a CPU device at one thread only."""
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match="--clock cpu times a CPU device at one thread"):
            throughput.main(["--quick", "--device", "cpu", "--threads", "2", "--clock", "cpu", "--loader-workers", ""])
    finally:
        torch.set_num_threads(threads)
