"""Encoder–decoder RNN with optional attention (additive or multiplicative).

    encoder   h_1 … h_S = BiRNN(E_src x)                       (B, S, 2H)
    bridge    s_0 = tanh(W_b [→h_S ; ←h_1] + b_b)             decoder start state
    decoder   s_t = RNN(s_{t-1}, [E_tgt y_{t-1} ; ã_{t-1}])    ã fed back = input feeding
    attention c_t = Σ_j α_tj h_j,  α_t = softmax(v·tanh(W_q s_t + b + W_k h_j))    bahdanau
                                  or α_t = softmax(s_t · W_k h_j)                 luong
    output    ã_t = tanh(W_c [c_t ; s_t]),  p(y_t | y_<t, x) = softmax(W_o ã_t + b_o)
              W_o = E_tgt with model.tie_embeddings (the default; it needs emb_dim = dec_hidden)

The query is the current state s_t, as in Luong et al.'s global attention, for either score
(Bahdanau et al.'s RNNsearch queries with s_{t-1}). With ``attention: none`` the decoder sees the
source only through s_0, as in Sutskever et al.'s encoder–decoder (theirs had a one-way encoder
over the reversed source, whose final state the decoder started from), and ã_t = s_t. Training and
inference share ``Decoder.step``; without input feeding, training runs the decoder RNN over the
whole target at once (same maths, fused kernels), tested equal to the steps. With ``fused`` (the
trainer's default), LSTM training runs the encoder and the input-feeding decoder through
``nmt.recurrence`` instead: the same parameters and maths with a hand-written backward, tested
equal to these modules' own path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.activations import tanh_
from nmt.attention import AdditiveAttention, MultiplicativeAttention
from nmt.config import ModelConfig
from nmt.dropout import Dropout, dropout
from nmt.linear import linear, lstm_cell
from nmt.quantize import int8_bilstm, int8_weight
from nmt.recurrence import attention_decoder, bilstm
from nmt.state import DecoderState, Memory
from nmt.stretches import by_length, by_length_pays
from nmt.tokenizer import PAD

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# Devices where a fused training step runs the encoder through nmt.recurrence.bilstm; elsewhere
# nn.LSTM's own kernel with autograd. On a GPU that is cuDNN, which runs a whole layer in a few
# launches where bilstm launches a dozen small kernels per time step: on an H200 a training step of
# the default model was 1.71x faster with the cuDNN encoder (1.39x with 12k-token batches;
# benchmarks/results/2026-12-04-h200-cuda-train.md). The decoder keeps its fast path there.
FUSED_ENCODER_DEVICES = frozenset({"cpu"})


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.emb_dim, padding_idx=PAD)
        self.dropout = Dropout(config.dropout)
        self.rnn = RNNS[config.cell](
            config.emb_dim,
            config.enc_hidden,
            num_layers=config.enc_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.enc_layers > 1 else 0.0,
        )

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, fused: bool = False):
        """src (B, S), lengths (B,) → outputs (B, S, 2H), final (h, c) each (B, 2H) of the top layer.

        ``fused``: when gradients are wanted, an LSTM runs through ``nmt.recurrence`` (hand-written
        backward, bf16 matmuls under autocast) instead of nn.LSTM; same weights, same maths.
        Without gradients: an LSTM in int8 inside ``nmt.quantize.int8_products``; elsewhere, in eval
        mode where the dense kernel pays, stretches of time between sentence lengths run together
        (``nmt.stretches``)."""
        x = self.dropout(self.embed(src))  # (B, S, E)
        is_lstm = isinstance(self.rnn, nn.LSTM)
        if fused and is_lstm and x.device.type in FUSED_ENCODER_DEVICES and torch.is_grad_enabled():
            out, state = bilstm(self.rnn, x, lengths, self.training)
        elif not torch.is_grad_enabled() and is_lstm and int8_weight(self.rnn.weight_ih_l0) is not None:
            out, state = int8_bilstm(self.rnn, x, lengths)
        elif not torch.is_grad_enabled() and not self.training and by_length_pays(x):
            out, state = by_length(self.rnn, x, lengths)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, 2H)
        h, c = state if isinstance(state, tuple) else (state, None)
        # h: (layers * 2, B, H); the last two rows are the top layer's forward and backward states.
        top = lambda t: None if t is None else torch.cat([t[-2], t[-1]], dim=-1)  # noqa: E731
        return self.dropout(out), top(h), top(c)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int):
        super().__init__()
        self.config = config
        enc_dim, d = 2 * config.enc_hidden, config.dec_hidden
        self.embed = nn.Embedding(vocab_size, config.emb_dim, padding_idx=PAD)
        self.dropout = Dropout(config.dropout)
        self.input_feeding = config.input_feeding and config.attention != "none"
        rnn_in = config.emb_dim + (d if self.input_feeding else 0)
        self.rnn = RNNS[config.cell](
            rnn_in,
            d,
            num_layers=config.dec_layers,
            batch_first=True,
            dropout=config.dropout if config.dec_layers > 1 else 0.0,
        )
        self.bridge_h = nn.Linear(enc_dim, config.dec_layers * d)
        self.bridge_c = nn.Linear(enc_dim, config.dec_layers * d) if config.cell == "lstm" else None
        self.attention: AdditiveAttention | MultiplicativeAttention | None = None
        self.combine: nn.Linear | None = None
        if config.attention != "none":
            self.attention = (
                AdditiveAttention(d, enc_dim, config.attn_dim)
                if config.attention == "bahdanau"
                else MultiplicativeAttention(d, enc_dim)
            )
            self.combine = nn.Linear(enc_dim + d, d, bias=False)  # W_c

    def combine_columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_c's context columns (D, 2H) and state columns (D, D): the views of its weight that
        decoding multiplies by (``Memory``). The same two objects while the weight keeps its storage,
        so the decoding contexts find the packed or int8 forms they made of them on entry
        (``product_views``, ``nmt.quantize.product_matrices``)."""
        weight = self.combine.weight
        cached = self.__dict__.get("_combine_columns")
        if cached is None or cached[0] is not weight or cached[1].data_ptr() != weight.data_ptr():
            split = weight.size(1) - self.config.dec_hidden
            cached = self._combine_columns = (weight, weight[:, :split], weight[:, split:])
        return cached[1], cached[2]

    def product_views(self) -> list[torch.Tensor]:
        """Views of weight matrices that decoding multiplies by, besides the matrices themselves."""
        return list(self.combine_columns()) if self.combine is not None else []

    def init_state(self, final_h: torch.Tensor, final_c: torch.Tensor | None) -> DecoderState:
        """Bridge from the encoder's final top-layer states (B, 2H) to the decoder's start state:
        s_0 = tanh(W_b [→h_S ; ←h_1] + b_b) per layer, an LSTM's cell c_0 = W_bc [→c_S ; ←c_1] + b_bc
        (no tanh: a cell state is not bounded), and ã_0 = 0 to feed the first step."""
        layers, b = self.config.dec_layers, final_h.size(0)
        as_layers = lambda t: t.view(b, layers, -1).transpose(0, 1).contiguous()  # noqa: E731
        hidden = as_layers(torch.tanh(linear(final_h, self.bridge_h.weight, self.bridge_h.bias)))  # s_0: (L, B, D)
        cell = None
        if self.bridge_c is not None:
            cell = as_layers(linear(final_c, self.bridge_c.weight, self.bridge_c.bias))  # c_0: (L, B, D)
        feed = final_h.new_zeros(b, self.config.dec_hidden) if self.input_feeding else None  # ã_0 = 0: (B, D)
        return DecoderState(hidden, cell, feed)

    def _attend(self, out: torch.Tensor, memory: Memory):
        """out (B, T, D) decoder RNN outputs s_t → attentional vectors ã_t = tanh(W_c [c_t ; s_t])
        (B, T, D), weights α_t (B, T, S). (``bound``: |values| ≤ 1, which int8 products use.)"""
        if self.attention is None:
            return out, None
        context, weights = self.attention(out, memory.keys, memory.values, memory.mask)  # c_t = Σ_j α_tj h_j
        if memory.combined:  # decoding: W_c's context columns were applied to h_j once (Memory), so
            # the "context" is W_c,ctx c_t already, and ã_t = tanh(W_c,ctx c_t + W_c,state s_t); fp32
            state_part = linear(out, self.combine_columns()[1], bound=1.0)  # |out| ≤ 1
            return tanh_(context.add_(state_part)).to(state_part.dtype), weights
        # |context|, |out| ≤ 1: RNN outputs, and weighted means of them
        return tanh_(linear(torch.cat([context, out], dim=-1), self.combine.weight, bound=1.0)), weights

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        """One target position: prev (R,) ids → ã_t (R, D), new state, weights (R, S) or None.
        R = k·B: k rows per sentence of ``memory`` (k = 1 but in beam search)."""
        return self.step_embedded(self.dropout(self.embed(prev)), state, memory)

    def step_embedded(self, x: torch.Tensor, state: DecoderState, memory: Memory):
        """``step`` from the embedded previous token x (R, E); training and search both run this."""
        if self.input_feeding:
            x = torch.cat([x, state.feed], dim=-1)  # (R, E + D)
        hidden, cell = self._rnn_cells(x, state)  # (L, R, D) each
        rows, sentences = x.size(0), memory.mask.size(0)
        # The k rows of a sentence are k queries of its attention: (B, k, D), one memory row each.
        attn_vec, weights = self._attend(hidden[-1].view(sentences, rows // sentences, -1), memory)
        attn_vec = attn_vec.reshape(rows, -1)
        new_state = DecoderState(hidden, cell, attn_vec if self.input_feeding else None)
        return attn_vec, new_state, None if weights is None else weights.reshape(rows, -1)

    def _rnn_cells(self, x: torch.Tensor, state: DecoderState):
        """One time step through every layer of ``self.rnn`` with its own weights.

        Same maths as calling the nn.LSTM/GRU/RNN on a length-1 sequence, but the single-step
        cell kernels avoid the per-call set-up of the fused sequence kernel (several times faster
        on CPU for one step, forward and backward).
        """
        rnn, hiddens, cells = self.rnn, [], []
        for layer in range(rnn.num_layers):
            weights = [getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if state.cell is not None:
                h, c = lstm_cell(x, state.hidden[layer], state.cell[layer], *weights)
                cells.append(c)
            elif self.config.cell == "gru":
                h = torch.gru_cell(x, state.hidden[layer], *weights)
            else:
                h = torch.rnn_tanh_cell(x, state.hidden[layer], *weights)
            hiddens.append(h)
            x = dropout(h, rnn.dropout, self.training) if layer < rnn.num_layers - 1 else h
        return _layers(hiddens), _layers(cells) if cells else None

    def forward(self, tgt_in: torch.Tensor, state: DecoderState, memory: Memory, fused: bool = False) -> torch.Tensor:
        """Teacher forcing over the whole target: tgt_in (B, T) → attentional vectors (B, T, D).

        ``fused``: with input feeding, an LSTM and gradients wanted, all steps run as one call of
        ``nmt.recurrence.attention_decoder`` (hand-written backward), the same maths as the steps."""
        x = self.dropout(self.embed(tgt_in))  # (B, T, E), embedded once for all positions
        if self.input_feeding and fused and state.cell is not None and torch.is_grad_enabled():
            return attention_decoder(self.rnn, self.attention, self.combine, x, state.hidden, state.cell,
                                     memory.keys, memory.values, memory.mask, self.training)
        if self.input_feeding:  # ã_{t-1} feeds step t: the recurrence must go one step at a time
            outs = []
            for x_t in x.unbind(1):
                attn_vec, state, _ = self.step_embedded(x_t, state, memory)
                outs.append(attn_vec)
            return torch.stack(outs, dim=1)
        out, _ = self.rnn(x, state.rnn_state())  # (B, T, D), one fused call
        return self._attend(out, memory)[0]


def _layers(states: list[torch.Tensor]) -> torch.Tensor:
    """L states (R, D) → (L, R, D); for one layer (the default decoder) a view, not a copy."""
    return states[0].unsqueeze(0) if len(states) == 1 else torch.stack(states)


class Seq2Seq(nn.Module):
    """encode → decode_step / forward, plus the output projection (the 'generator')."""

    def __init__(self, config: ModelConfig, src_vocab: int, tgt_vocab: int):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, src_vocab)
        self.decoder = Decoder(config, tgt_vocab)
        self.dropout = Dropout(config.dropout)
        self.generator = nn.Linear(config.dec_hidden, tgt_vocab, bias=True)  # W_o
        if config.tie_embeddings:
            self.generator.weight = self.decoder.embed.weight
        self._init_weights()

    def _init_weights(self) -> None:
        for embed in (self.encoder.embed, self.decoder.embed):
            nn.init.normal_(embed.weight, std=embed.embedding_dim**-0.5)
            with torch.no_grad():
                embed.weight[PAD].zero_()
        nn.init.zeros_(self.generator.bias)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor, fused: bool = False) -> tuple[Memory, DecoderState]:
        values, final_h, final_c = self.encoder(src, lengths, fused)
        mask = src != PAD  # (B, S)
        decoder = self.decoder
        if decoder.attention is None:
            return Memory(values, None, mask), decoder.init_state(final_h, final_c)
        keys = decoder.attention.project_keys(values)
        combined = not torch.is_grad_enabled()  # decoding: W_c's context columns applied here, once (Memory)
        if combined:
            values = linear(values, decoder.combine_columns()[0], bound=1.0)  # (B, S, D); |h_j| ≤ 1
            values = values.to(torch.promote_types(values.dtype, torch.float32))  # nmt.attention: fp32
        return Memory(values, keys, mask, combined), decoder.init_state(final_h, final_c)

    def decode_step(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        """prev (R,) → log-probabilities (R, V), next state, attention weights (R, S) or None; R rows:
        a sentence each (greedy), or its beam's hypotheses (n·k in beam search)."""
        logits, state, weights = self.step_logits(prev, state, memory)
        return torch.log_softmax(logits, dim=-1), state, weights

    def step_logits(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        """``decode_step`` before the softmax: the logits (R, V) in fp32, next state, weights."""
        attn_vec, state, weights = self.decoder.step(prev, state, memory)
        # W_o ã_t + b_o: p(y_t | y_<t, x) = softmax(these), taken by the caller (|ã_t| ≤ 1: ``bound``)
        logits = linear(self.dropout(attn_vec), self.generator.weight, self.generator.bias, bound=1.0)
        return logits.float(), state, weights

    def features(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor, fused: bool = False):
        """Teacher-forced inputs of the output layer (B, T, D): ã_t after dropout, every position.

        Training feeds these with ``generator``'s weights to ``nmt.loss.linear_cross_entropy``,
        which never materialises the full (B, T, V) logits. ``fused``: the LSTMs' training fast
        path (``nmt.recurrence``)."""
        memory, state = self.encode(src, lengths, fused)
        return self.dropout(self.decoder(tgt_in, state, memory, fused))

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) of the next target token at every position."""
        return self.generator(self.features(src, lengths, tgt_in))  # one large matmul for all positions


def build_model(config: ModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """The one factory: a model from its config and vocabulary sizes (all a checkpoint needs)."""
    return Seq2Seq(config, src_vocab, tgt_vocab)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
