"""On a CUDA GPU nmt behaves as on the CPU: same maths, same searches, a model that learns, a
training loop that checkpoints and resumes, a CLI that translates. Skipped without a GPU (CI has
none); run there with ``pytest tests/test_cuda.py``."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import SPM200, TINY_TSV, saved_tiny_model, small_model, tiny_config
from nmt import model as model_module
from nmt.batching import Sequences, make_batch, token_batches
from nmt.beam import beam_search
from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.config import ModelConfig
from nmt.model import build_model
from nmt.search import greedy, max_lengths
from nmt.train import Trainer, batch_loss
from nmt.translate import Translator

# cuBLAS is deterministic only with a fixed workspace, set before its first use (one test asks for it).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")
SRC = torch.tensor([[5, 6, 7, 8, 3, 0], [9, 4, 3, 0, 0, 0], [4, 5, 6, 7, 8, 3], [4, 3, 0, 0, 0, 0]])
LENGTHS = torch.tensor([5, 3, 6, 2])
TGT_IN = torch.tensor([[2, 4, 5, 6, 7], [2, 7, 8, 0, 0], [2, 9, 9, 9, 4], [2, 5, 0, 0, 0]])
LINES = ["Y dijo Dios: Sea la luz.", "", "Y vió Dios que la luz era buena.", "En el principio"]


@pytest.fixture(autouse=True)
def _exact_fp32():
    """TF32 off, so fp32 products on the GPU round as on the CPU (PyTorch's default; asserted here)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=["recurrence", "cudnn"])
def encoder(request, monkeypatch):
    """The training fast path's encoder on the GPU: nmt.recurrence.bilstm, or cuDNN's nn.LSTM."""
    devices = {"cpu", "cuda"} if request.param == "recurrence" else {"cpu"}
    monkeypatch.setattr(model_module, "FUSED_ENCODER_DEVICES", frozenset(devices))
    return request.param


def _features_and_grads(model, device, fused: bool):
    model.zero_grad()
    out = model.features(SRC.to(device), LENGTHS, TGT_IN.to(device), fused=fused)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype).to(device)
    (out * weights).sum().backward()
    # Copies: on the CPU .cpu() is the tensor itself, whose data model.to(CUDA) would move.
    return out.detach().cpu().clone(), {n: p.grad.cpu().clone() for n, p in model.named_parameters()
                                        if p.grad is not None}


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
@pytest.mark.parametrize("layers", [1, 2])
def test_gpu_fast_path_and_plain_path_equal_the_cpu_in_fp64(attention, layers, encoder):
    """Outputs and every gradient, fused and plain, on the GPU, against the CPU's plain path."""
    model = small_model("lstm", attention, True, vocab=11, layers=layers).double().train()
    reference, reference_grads = _features_and_grads(model, "cpu", fused=False)
    model.to(CUDA)
    for fused in (True, False):
        out, grads = _features_and_grads(model, CUDA, fused)
        torch.testing.assert_close(out, reference, rtol=1e-9, atol=1e-11)
        assert grads.keys() == reference_grads.keys()
        for name, grad in reference_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-8, atol=1e-10, msg=f"{name} (fused={fused})")


def test_gpu_training_step_equals_the_cpu_in_fp32(encoder):
    """One fused training step of the tiny default-shaped model: loss and gradients as on the CPU."""
    torch.manual_seed(0)
    config = ModelConfig(emb_dim=32, enc_hidden=32, dec_hidden=32, attn_dim=32, dropout=0.0)
    model = build_model(config, 40, 40).train()
    src, tgt = _reverse_task(64, seed=2)
    batch = make_batch(src, np.arange(64), tgt)
    losses, grads = [], []
    for device in ("cpu", CUDA):
        model.to(device).zero_grad()
        loss, n = batch_loss(model, batch.to(device), 0.1, fused=True)
        (loss / n).backward()
        losses.append(loss.item())
        grads.append({name: p.grad.cpu().clone() for name, p in model.named_parameters()})
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_gpu_searches_equal_the_cpu_and_do_not_depend_on_the_batch(attention):
    """fp64, so the two devices' rounding cannot flip a near-tie: greedy and beam (both stopping
    rules) give the CPU's hypotheses, beam 1 is greedy, and a sentence alone gets what it gets in
    its batch."""
    model = small_model("lstm", attention, vocab=9, seed=4).double()
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(2, 7, (9,), generator=g)
    src = torch.zeros(9, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        src[i, : n - 1] = torch.randint(4, 9, (n - 1,), generator=g)
        src[i, n - 1] = 3
    limits = max_lengths(lengths, 2.0, 3)
    cpu_greedy = [h.tokens for h in greedy(model, src, lengths, limits)]
    cpu_beams = {rule: beam_search(model, src, lengths, limits, 4, 0.6, 2, stopping=rule)
                 for rule in ("bound", "finished")}
    model.to(CUDA)
    src_gpu = src.to(CUDA)
    assert [h.tokens for h in greedy(model, src_gpu, lengths, limits)] == cpu_greedy
    assert [hyps[0].tokens for hyps in beam_search(model, src_gpu, lengths, limits, 1)] == cpu_greedy
    for rule, expected in cpu_beams.items():
        together = beam_search(model, src_gpu, lengths, limits, 4, 0.6, 2, stopping=rule)
        assert [[h.tokens for h in hyps] for hyps in together] == [[h.tokens for h in hyps] for hyps in expected]
        for i in range(len(src)):
            alone = beam_search(model, src_gpu[i : i + 1, : lengths[i]], lengths[i : i + 1], limits[i : i + 1], 4, 0.6,
                                2, stopping=rule)
            assert [h.tokens for h in alone[0]] == [h.tokens for h in together[i]]
            assert alone[0][0].score == pytest.approx(together[i][0].score, abs=1e-9)


WORDS = range(4, 14)


def _reverse_task(n: int, seed: int):
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        seq = rng.choice(list(WORDS), size=int(rng.integers(3, 9))).tolist()
        src.append(seq + [3])
        tgt.append(seq[::-1])
    return Sequences.from_lists(src), Sequences.from_lists(tgt)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_model_learns_on_the_gpu_with_bf16_autocast_and_the_fast_path(attention, encoder):
    """The functional test, on the GPU: bf16 autocast training through the fast path learns to reverse
    sequences; greedy and beam, fp32 and bf16, decode what was learnt; fp32 greedy equals the CPU's."""
    torch.manual_seed(0)
    config = ModelConfig(emb_dim=32, enc_hidden=32, dec_hidden=32, attention=attention, attn_dim=32, dropout=0.0)
    model = build_model(config, 14, 14).to(CUDA)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    train_src, train_tgt = _reverse_task(3000, seed=1)
    first = last = None
    for epoch in range(10):  # bf16 training: 6 epochs (the CPU's fp32 test) reached 92 % here
        for index in token_batches(train_src.lengths, train_tgt.lengths, 640, np.random.default_rng(epoch)):
            batch = make_batch(train_src, index, train_tgt).to(CUDA)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss, n = batch_loss(model, batch, 0.0, fused=True)
            optimizer.zero_grad()
            (loss / n).backward()
            optimizer.step()
            last = loss.item() / n
            first = last if first is None else first
    assert last < 0.1 * first
    model.eval()
    test_src, test_tgt = _reverse_task(200, seed=99)
    batch = make_batch(test_src, np.arange(200)).to(CUDA)
    limits = max_lengths(batch.src_lengths.cpu(), 2.0, 2)
    expected = [test_tgt.get(i).tolist() for i in range(200)]
    outputs = {}
    for precision in ("fp32", "bf16"):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            outputs[precision, 1] = [h.tokens for h in greedy(model, batch.src, batch.src_lengths, limits)]
            outputs[precision, 3] = [hs[0].tokens for hs in beam_search(model, batch.src, batch.src_lengths, limits, 3,
                                                                        0.6)]
    for key, tokens in outputs.items():
        exact = np.mean([t == e for t, e in zip(tokens, expected)])
        assert exact >= 0.95, f"{key}: only {exact:.0%} reversed exactly"
    cpu = model.to("cpu")
    cpu_batch = make_batch(test_src, np.arange(200))
    assert [h.tokens for h in greedy(cpu, cpu_batch.src, cpu_batch.src_lengths, limits)] == outputs["fp32", 1]


def _prepared(tmp_path):
    """The tiny corpus as prepared splits (train / dev) and the shipped 200-piece tokenizer."""
    rows = [line.split("\t") for line in TINY_TSV.read_text(encoding="utf-8").splitlines()]
    data = tmp_path / "data"
    data.mkdir()
    for split, part in (("train", rows[:-60]), ("dev", rows[-60:])):
        for column, lang in ((1, "es"), (2, "en")):
            (data / f"{split}.{lang}").write_text("".join(r[column] + "\n" for r in part), encoding="utf-8")
    shutil.copytree(SPM200, tmp_path / "tokenizer")
    return data, tmp_path / "tokenizer"


@pytest.fixture
def _deterministic(monkeypatch):
    """cuBLAS and the accumulating index ops in their deterministic modes (two runs, same rounding)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def test_training_loop_on_the_gpu_validates_checkpoints_and_resumes(tmp_path, _deterministic):
    """Trainer on CUDA with bf16 and dropout (masks drawn on the GPU): dev loss and BLEU computed on
    the GPU at every validation, and a run stopped at step 30 and resumed (the GPU's random state
    restored) ends with the weights of a run that went to step 60 at once."""
    data, tok = _prepared(tmp_path)
    overrides = ["train.precision=bf16", "train.valid_every=30", "train.max_steps=60", "model.dropout=0.3"]
    whole = Trainer(tiny_config(tmp_path, *overrides), data, tok, tmp_path / "whole", "cuda")
    assert whole.device.type == "cuda" and whole.precision == "bf16"
    assert whole.train()["steps"] == 60
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [30, 60] and all(np.isfinite(r["dev_loss"]) for r in valid)
    train_losses = [r["train_loss"] for r in records if r["kind"] == "train"]
    assert train_losses[-1] < train_losses[0]
    Trainer(tiny_config(tmp_path, *overrides, "train.max_steps=30"), data, tok, tmp_path / "split", "cuda").train()
    resumed = Trainer(tiny_config(tmp_path, *overrides), data, tok, tmp_path / "split", "cuda")
    assert resumed.state.step == 30
    resumed.train()
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_gpu_checkpoints_load_on_the_cpu_and_translate_the_same(tmp_path):
    config, tokenizer, model, _ = saved_tiny_model(tmp_path / "cpu")
    model = model.double().to(CUDA)
    on_gpu = Translator(model, tokenizer, config, CUDA).translate(LINES, beam=3)
    assert len(on_gpu) == len(LINES) and on_gpu[1] == ""
    folder = save_checkpoint(tmp_path / "ckpt", model, config, tokenizer, step=1)
    loaded = load_checkpoint(folder, "cpu")
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    on_cpu = Translator(loaded.model.double(), loaded.tokenizer, loaded.config, "cpu").translate(LINES, beam=3)
    assert on_cpu == on_gpu
    back = load_checkpoint(folder, "cuda")
    assert all(p.device.type == "cuda" for p in back.model.parameters())


def test_cli_translates_on_the_gpu(tmp_path):
    from nmt.cli import app

    *_, folder = saved_tiny_model(tmp_path)
    source, out = tmp_path / "in.es", tmp_path / "out.en"
    source.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    for precision in ("fp32", "bf16", "auto"):
        result = CliRunner().invoke(app, ["translate", "--checkpoint", str(folder), "--input", str(source), "--output",
                                          str(out), "--device", "cuda", "--precision", precision, "--beam", "2"])
        assert result.exit_code == 0, result.output
        assert len(out.read_text(encoding="utf-8").splitlines()) == len(LINES)
    out.write_text("earlier output\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["translate", "--checkpoint", str(folder), "--input", str(source), "--output",
                                      str(out), "--device", "cuda", "--precision", "int8"])
    assert result.exit_code == 1 and "int8 decoding runs on the CPU only" in result.output
    assert out.read_text(encoding="utf-8") == "earlier output\n"  # nothing written on failure


def test_a_cuda_device_this_machine_lacks_is_a_clear_error():
    from nmt.errors import NmtError
    from nmt.hardware import pick_device

    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(NmtError, match=f"device {missing} requested, but this machine has"):
        pick_device(missing)
    assert pick_device("cuda:0") == torch.device("cuda:0")
