"""Analytic FLOP count of one training step of nmt.model.Seq2Seq (an LSTM, GRU or tanh RNN;
additive, Luong or no attention).

One multiply-add is 2 FLOPs. Only the matrix products and the per-(target, source) attention
arithmetic are counted — the work a perfect implementation could not avoid. Not counted:
embedding look-ups (no arithmetic), element-wise gate non-linearities, dropout, softmax and the
loss (O(V) per token against the O(D·V) output projection), and the Adam update (~10 FLOPs per
parameter per step, under 0.2 % of a 3000-token step). Padding is not counted either: the counts
use each sentence's real length, so FLOP/s is *useful* work per second.

Training = forward + backward, and backward costs twice the forward (a gradient for the inputs
and one for the weights, each a product of the same size), hence the factor 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN_FACTOR = 3  # forward + backward (2 × forward)
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # W_i, W_h blocks of a recurrent cell: LSTM i f g o, GRU r z n, RNN one


@dataclass(frozen=True)
class Dims:
    emb: int  # E, source and target embedding size
    enc_hidden: int  # H per direction (bidirectional encoder: outputs 2H)
    enc_layers: int
    dec_hidden: int  # D
    dec_layers: int
    attn: int  # A, additive attention's hidden size
    input_feeding: bool
    tgt_vocab: int  # V
    attention: str = "bahdanau"  # bahdanau (additive) | luong (multiplicative: keys projected to D) | none
    cell: str = "lstm"  # lstm | gru | rnn

    @classmethod
    def from_config(cls, model_config, tgt_vocab: int) -> "Dims":
        m = model_config
        # nmt.model.Decoder feeds ã_t back only where there is attention (without, ã_t is s_t)
        return cls(m.emb_dim, m.enc_hidden, m.enc_layers, m.dec_hidden, m.dec_layers, m.attn_dim,
                   m.input_feeding and m.attention != "none", tgt_vocab, m.attention, m.cell)

    @property
    def key_dim(self) -> int:
        """Size of a projected key: A for additive attention, D for multiplicative."""
        return self.attn if self.attention == "bahdanau" else self.dec_hidden


def rnn_flops(inputs: int, hidden: int, cell: str = "lstm") -> int:
    """One recurrent time step: a W_i x + W_h h per gate → 2 · gates · H · (in + H)."""
    return 2 * GATES[cell] * hidden * (inputs + hidden)


def per_source_token(d: Dims) -> int:
    """Forward FLOPs spent once per source token (encoder and the attention keys)."""
    flops = 0
    for layer in range(d.enc_layers):
        inputs = d.emb if layer == 0 else 2 * d.enc_hidden
        flops += 2 * rnn_flops(inputs, d.enc_hidden, d.cell)  # forward and backward direction
    if d.attention != "none":
        flops += 2 * (2 * d.enc_hidden) * d.key_dim  # key projection W_k h_j, once per sentence position
    return flops


def per_target_token(d: Dims) -> int:
    """Forward FLOPs spent once per target token (decoder RNN, query, combine, output layer)."""
    enc_out = 2 * d.enc_hidden
    flops = 0
    for layer in range(d.dec_layers):
        inputs = (d.emb + (d.dec_hidden if d.input_feeding else 0)) if layer == 0 else d.dec_hidden
        flops += rnn_flops(inputs, d.dec_hidden, d.cell)
    if d.attention == "bahdanau":
        flops += 2 * d.dec_hidden * d.attn  # query projection W_q s_t
    if d.attention != "none":  # without attention ã_t = s_t: no combine
        flops += 2 * (enc_out + d.dec_hidden) * d.dec_hidden  # combine ã_t = tanh(W_c [c_t; s_t])
    flops += 2 * d.dec_hidden * d.tgt_vocab  # output projection W_o ã_t (tied to the embeddings)
    return flops


def per_pair(d: Dims) -> int:
    """Forward FLOPs per (target position, source position) pair of one sentence."""
    if d.attention == "none":
        return 0
    if d.attention == "bahdanau":
        score = d.attn + 2 * d.attn  # q + k_j (the add inside tanh), then v · tanh(…)
    else:
        score = 2 * d.dec_hidden  # s_t · (W_k h_j)
    return score + 2 * (2 * d.enc_hidden)  # context Σ_j α_j h_j


def per_sentence(d: Dims) -> int:
    """Forward FLOPs once per sentence: the bridge from the encoder to the decoder start state."""
    states = 2 if d.cell == "lstm" else 1  # W_b for h, and an LSTM's W_bc for c
    return states * 2 * (2 * d.enc_hidden) * (d.dec_layers * d.dec_hidden)


def forward_flops(d: Dims, src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> float:
    """Forward FLOPs of the model on sentences of these lengths (source with </s>, target with
    </s>: the positions the decoder predicts). Greedy search producing those targets costs the
    same: one decoder step per target position, the encoder once per sentence."""
    src = np.asarray(src_lengths, dtype=np.float64)
    tgt = np.asarray(tgt_lengths, dtype=np.float64)
    return float(
        src.sum() * per_source_token(d)
        + tgt.sum() * per_target_token(d)
        + (src * tgt).sum() * per_pair(d)
        + len(src) * per_sentence(d)
    )


def training_flops(d: Dims, src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> float:
    """FLOPs of one training step on sentences of these lengths."""
    return TRAIN_FACTOR * forward_flops(d, src_lengths, tgt_lengths)


def describe(d: Dims) -> dict:
    """The per-unit counts, for the results file."""
    return {
        "forward_flops_per_source_token": per_source_token(d),
        "forward_flops_per_target_token": per_target_token(d),
        "forward_flops_per_src_tgt_pair": per_pair(d),
        "forward_flops_per_sentence": per_sentence(d),
        "train_factor": TRAIN_FACTOR,
    }
