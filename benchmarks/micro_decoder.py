"""Micro-benchmark for a training speed lever: the decoder's layer-0 input projection.

nmt's teacher-forced decoder runs ``torch.lstm_cell([E y_{t-1}; ã_{t-1}], …)`` once per target
position, so the embedding half of W_ih is multiplied in T small GEMMs. The variant computes
that half for all positions in one GEMM before the loop and hands each step its slice as the
(batch-shaped) ``b_ih`` of ``torch.lstm_cell``; only the input-feeding half stays in the loop.
Same maths: the script checks loss and gradients against the plain path in fp32, then times a
forward + backward of the whole model on a real 3000-token batch in fp32 and bf16 autocast.

    python benchmarks/micro_decoder.py [--reps 8]
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from workdir import WORK, ensure_work  # noqa: E402


def forward_precomputed(self, tgt_in, state, memory):
    """Decoder.forward with the embedding share of the layer-0 gates computed in one GEMM."""
    from nmt.model import DecoderState

    x = self.dropout(self.embed(tgt_in))  # (B, T, E)
    rnn, emb = self.rnn, x.size(-1)
    pre = F.linear(x, rnn.weight_ih_l0[:, :emb], rnn.bias_ih_l0)  # (B, T, 4D), one GEMM
    w_feed = rnn.weight_ih_l0[:, emb:].contiguous()  # (4D, D)
    outs = []
    for t in range(x.size(1)):
        h, c = torch.lstm_cell(state.feed, (state.hidden[0], state.cell[0]), w_feed, rnn.weight_hh_l0,
                               pre[:, t], rnn.bias_hh_l0)
        hidden, cell = h.unsqueeze(0), c.unsqueeze(0)
        attn_vec, _ = self._attend(h.unsqueeze(1), memory)
        attn_vec = attn_vec.squeeze(1)
        state = DecoderState(hidden, cell, attn_vec)
        outs.append(attn_vec)
    return torch.stack(outs, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)

    from nmt.batching import Sequences, make_batch, token_batches
    from nmt.config import load_config
    from nmt.data import read_lines, split_path
    from nmt.model import build_model
    from nmt.tokenizer import Tokenizer
    from nmt.train import loss_fn

    work = ensure_work(WORK)
    config = load_config(HERE.parent / "configs" / "bible-es-en.yaml", ["model.dropout=0.0"])
    tok = Tokenizer.from_folder(work / "tokenizer")
    src = Sequences.from_lists(tok.encode_src(read_lines(split_path(work / "data", "train", "es"))[:4000]))
    tgt = Sequences.from_lists(tok.encode_tgt(read_lines(split_path(work / "data", "train", "en"))[:4000]))
    batches = token_batches(src.lengths, tgt.lengths, 3000, np.random.default_rng(1))
    batch = make_batch(src, batches[len(batches) // 2], tgt)
    print(f"batch: {batch.tgt_in.shape[0]} sentences × {batch.tgt_in.shape[1]} target positions")
    torch.manual_seed(1)
    model = build_model(config.model, tok.src_vocab, tok.tgt_vocab).train()
    plain_forward = model.decoder.forward
    fast_forward = types.MethodType(forward_precomputed, model.decoder)

    def step(bf16: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss, n = loss_fn(logits, batch.tgt_out, 0.1)
        (loss / n).backward()
        return float(loss)

    # same maths: loss and every gradient, fp32, dropout off
    model.decoder.forward = plain_forward
    loss_a = step(False)
    grads_a = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.decoder.forward = fast_forward
    loss_b = step(False)
    worst = max(float((p.grad - grads_a[k]).abs().max() / (grads_a[k].abs().max() + 1e-12))
                for k, p in model.named_parameters() if p.grad is not None)
    print(f"fp32 loss plain {loss_a:.6f} / precomputed {loss_b:.6f}; worst relative gradient difference {worst:.2e}")

    for bf16 in (False, True):
        times = {}
        for name, fwd in (("plain", plain_forward), ("precomputed", fast_forward)):
            model.decoder.forward = fwd
            for _ in range(2):
                step(bf16)
            t0 = time.perf_counter()
            for _ in range(args.reps):
                step(bf16)
            times[name] = (time.perf_counter() - t0) / args.reps
        print(f"{'bf16' if bf16 else 'fp32'}: plain {times['plain'] * 1000:.0f} ms, precomputed "
              f"{times['precomputed'] * 1000:.0f} ms per forward+backward ({times['plain'] / times['precomputed']:.3f}×)")


if __name__ == "__main__":
    main()
