"""SentencePiece training, encoding and decoding. No torch here.

Piece ids are fixed so the model can rely on them: 0 = <pad>, 1 = <unk>, 2 = <s>, 3 = </s>.
A tokenizer is a folder holding ``src.model`` and ``tgt.model`` (the same bytes when joint).
"""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path

import sentencepiece as spm

from nmt.atomic import atomic_write_bytes, atomic_write_text
from nmt.config import TokenizerConfig, settings_json
from nmt.data import normalise
from nmt.errors import NmtError

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = 0, 1, 2, 3
FILES = ("src.model", "tgt.model")


class TokenizerError(NmtError, ValueError):
    """A tokenizer that cannot be trained or loaded; one line for the user."""


SAMPLE_SEED = 1  # which lines a tokenizer trains on where there are more than tokenizer.max_sentences


def sample_lines(lines: list[str], most: int) -> list[str]:
    """At most ``most`` of ``lines`` (0: all of them), a uniform sample kept in its order, the same
    in every run. SentencePiece's own sampling (``input_sentence_size``) drew another sample in
    every process, and its seed (``set_random_generator_seed``, sentencepiece 0.2) did not fix it,
    so on a corpus above the limit the pieces, and every weight and score after them, changed
    from one run to the next."""
    if not most or len(lines) <= most:
        return lines
    return [lines[i] for i in sorted(random.Random(SAMPLE_SEED).sample(range(len(lines)), most))]


def _train_model(lines: list[str], config: TokenizerConfig, side: str) -> bytes:
    if not lines:
        raise TokenizerError("cannot train SentencePiece on an empty training split")
    model = io.BytesIO()
    try:
        _run_trainer(sample_lines(lines, config.max_sentences), config, model)
    except (RuntimeError, ValueError) as exc:  # SentencePiece's check (C++ file and condition first), or a
        # value it cannot parse (ValueError: tokenizer.vocab_size 2**31 or more)
        reason = " ".join(str(exc).split()).rsplit("] ", 1)[-1]
        raise TokenizerError(f"SentencePiece could not train on the {side}: {reason} (tokenizer.vocab_size="
                             f"{config.vocab_size}, tokenizer.character_coverage={config.character_coverage:g})"
                             ) from None
    return model.getvalue()


def _run_trainer(lines: list[str], config: TokenizerConfig, model: io.BytesIO) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type=config.model_type,
        vocab_size=config.vocab_size,
        character_coverage=config.character_coverage,
        input_sentence_size=0,  # every line given: sample_lines sampled them
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        hard_vocab_limit=False,  # tiny corpora: a smaller vocabulary instead of an error
        # the text as nmt.data.normalise left it: SentencePiece's default (NFKC) folded ，！？ to ,!? and
        # m² to m2, so a model could never write a Chinese comma, and its output missed the references
        normalization_rule_name="identity",
        num_threads=2,
        minloglevel=2,
    )


def train_tokenizer(src_lines: list[str], tgt_lines: list[str], config: TokenizerConfig, folder: Path) -> Path:
    """Train on the training split only, normalised as encoding normalises (``normalise``: splits
    prepared by an older nmt may hold what it now drops, which would become pieces never used),
    and write the tokenizer folder; returns its manifest."""
    folder = Path(folder)
    src_lines, tgt_lines = [normalise(line) for line in src_lines], [normalise(line) for line in tgt_lines]
    if config.joint:
        joint = _train_model(src_lines + tgt_lines, config, "training split (both sides, joint)")
        models = (joint, joint)
    else:
        models = (_train_model(src_lines, config, "training split's source side"),
                  _train_model(tgt_lines, config, "training split's target side"))
    for name, data in zip(FILES, models):
        atomic_write_bytes(folder / name, data)
    manifest = folder / "tokenizer.json"
    record = {"model_type": config.model_type, "joint": config.joint, "settings": settings_json(config)}
    atomic_write_text(manifest, json.dumps(record) + "\n")  # settings: training checks it trained on these
    tok = Tokenizer.from_folder(folder)
    log.info("SentencePiece %s: %d source / %d target pieces", config.model_type, tok.src_vocab, tok.tgt_vocab)
    if min(tok.src_vocab, tok.tgt_vocab) < config.vocab_size:  # hard_vocab_limit=False shrank it, unsaid
        log.warning("tokenizer.vocab_size=%d is more pieces than the training text supports: SentencePiece made "
                    "%d source / %d target pieces", config.vocab_size, tok.src_vocab, tok.tgt_vocab)
    return manifest


class Tokenizer:
    """Source and target SentencePiece processors with the project's fixed special ids."""

    def __init__(self, src_model: bytes, tgt_model: bytes):
        self.src_model, self.tgt_model = src_model, tgt_model
        self.src = spm.SentencePieceProcessor(model_proto=src_model)
        self.tgt = spm.SentencePieceProcessor(model_proto=tgt_model)
        for proc in (self.src, self.tgt):
            if (proc.pad_id(), proc.unk_id(), proc.bos_id(), proc.eos_id()) != (PAD, UNK, BOS, EOS):
                raise TokenizerError("SentencePiece model has unexpected special ids (need pad=0 unk=1 bos=2 eos=3)")

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        paths = [folder / name for name in FILES]
        for path in paths:
            if not path.is_file():
                raise TokenizerError(f"tokenizer file missing: {path}")
        try:
            return cls(paths[0].read_bytes(), paths[1].read_bytes())
        except RuntimeError as exc:
            raise TokenizerError(f"{folder}: not a SentencePiece model ({exc})") from exc

    def save(self, folder: Path) -> None:
        for name, data in zip(FILES, (self.src_model, self.tgt_model)):
            atomic_write_bytes(Path(folder) / name, data)

    @property
    def src_vocab(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab(self) -> int:
        return self.tgt.get_piece_size()

    # Every text is normalised before it is encoded, as the training data was (nmt.data.normalise:
    # NFC, invisible characters, whitespace): text to translate, references scored, pieces shown (a
    # no-op on prepared data). SentencePiece itself changes nothing (identity), but in a tokenizer
    # trained before it did: its model holds its normalisation, so it encodes as it always did.
    def encode_src(self, lines: list[str]) -> list[list[int]]:
        """Source ids, each sentence closed by </s>."""
        return [ids + [EOS] for ids in self.src.encode([normalise(line) for line in lines])]

    def src_lengths(self, lines: list[str]) -> list[int]:
        """Source pieces of each sentence, </s> included (as train.max_train_len counts them)."""
        return [len(ids) for ids in self.encode_src(lines)]

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        """Target ids without <s> or </s> (the batcher adds them)."""
        return self.tgt.encode([normalise(line) for line in lines])

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        """Text of each id sequence, normalised as the training targets were: a model that ends on
        the word-boundary piece "▁", or emits it twice, wrote "The " or "The   The"."""
        return [normalise(self.tgt.decode(seq)) for seq in ids]

    def src_pieces(self, line: str) -> list[str]:
        return self.src.encode(normalise(line), out_type=str) + ["</s>"]

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]
