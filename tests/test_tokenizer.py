"""SentencePiece: unigram or BPE, joint or separate, fixed special ids, lossless round trip."""

import pytest

from conftest import SPM200, TINY_TSV
from nmt.config import SECTIONS, Config, DataConfig, TokenizerConfig
from nmt.configcheck import validate
from nmt.corpus import read_pairs
from nmt.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, TokenizerError, train_tokenizer


@pytest.fixture(scope="module")
def sides():
    pairs = read_pairs(DataConfig(source=str(TINY_TSV)))
    return [p.src for p in pairs], [p.tgt for p in pairs]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("joint", [True, False])
def test_train_encode_decode(tmp_path, sides, model_type, joint):
    src, tgt = sides
    train_tokenizer(src, tgt, TokenizerConfig(model_type=model_type, vocab_size=150, joint=joint), tmp_path)
    tok = Tokenizer.from_folder(tmp_path)
    assert (tok.src_model == tok.tgt_model) is joint
    for proc in (tok.src, tok.tgt):
        assert (proc.pad_id(), proc.unk_id(), proc.bos_id(), proc.eos_id()) == (PAD, UNK, BOS, EOS)
    ids = tok.encode_tgt(tgt[:20])
    assert tok.decode_tgt(ids) == tgt[:20]  # detokenised output is the original text
    assert all(seq[-1] == EOS for seq in tok.encode_src(src[:5]))


def test_checked_in_model_loads():
    tok = Tokenizer.from_folder(SPM200)
    assert tok.src_vocab == tok.tgt_vocab == 200


def test_missing_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer file missing"):
        Tokenizer.from_folder(tmp_path)


def test_empty_training_text(tmp_path):
    with pytest.raises(TokenizerError, match="empty training split"):
        train_tokenizer([], [], TokenizerConfig(joint=False), tmp_path)


@pytest.mark.parametrize("joint", [True, False])
def test_a_vocabulary_smaller_than_the_characters_is_one_line_and_writes_nothing(tmp_path, sides, joint):
    src, tgt = sides
    with pytest.raises(TokenizerError) as caught:
        train_tokenizer(src, tgt, TokenizerConfig(vocab_size=10, joint=joint), tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "Vocabulary size is smaller than required_chars" in message
    assert "tokenizer.vocab_size=10" in message and ("joint" in message) is joint
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("coverage, sentences", [(0.98, 101), (1.0, 0)])
def test_the_configs_edge_values_are_ones_sentencepiece_accepts(tmp_path, sides, coverage, sentences):
    config = TokenizerConfig(vocab_size=150, character_coverage=coverage, max_sentences=sentences)
    validate(Config(tokenizer=config), SECTIONS)  # the config's own check lets them through …
    train_tokenizer(*sides, config, tmp_path)  # … and so does SentencePiece
    assert Tokenizer.from_folder(tmp_path).src_vocab == 150


def test_text_is_encoded_as_the_training_data_was_normalised():
    """NFC and one space for every run of whitespace, as nmt.data.normalise prepared the training
    data: SentencePiece's own normaliser left a NEL (U+0085) as <unk>, and scored references and
    shown pieces went unnormalised while the text translated did not."""
    import unicodedata

    tok = Tokenizer.from_folder(SPM200)
    plain = "Y dijo Dios: canción"
    for odd in ("Y dijo\x85Dios: canción", " Y dijo\u2028 Dios:\tcanción ", unicodedata.normalize("NFD", plain)):
        assert tok.encode_src([odd]) == tok.encode_src([plain])
        assert tok.encode_tgt([odd]) == tok.encode_tgt([plain])
        assert tok.src_pieces(odd) == tok.src_pieces(plain)


def test_a_target_s_own_characters_survive_the_round_trip(tmp_path, sides):
    """SentencePiece's default normalisation (NFKC) folded ，！？ to ,!? and m² to m2 in training and
    encoding, so no piece held them: a model could never write a Chinese comma, and a perfect
    translation of a zh test set scored BLEU 9.4 against its references."""
    src, tgt = sides
    chinese = [f"他说，要有光！第{i % 10}天？面积是{i}m²…（约）" for i in range(200)]
    for joint in (True, False):
        train_tokenizer(src, chinese, TokenizerConfig(vocab_size=300, joint=joint, character_coverage=1.0),
                        tmp_path / str(joint))
        tok = Tokenizer.from_folder(tmp_path / str(joint))
        assert tok.decode_tgt(tok.encode_tgt(chinese[:20])) == chinese[:20]
        assert UNK not in {i for ids in tok.encode_tgt(chinese) for i in ids}


def test_a_tokenizer_learns_no_piece_of_what_encoding_drops(tmp_path, sides):
    """Splits prepared by an older nmt can hold zero-width spaces and direction marks that
    normalising now drops; SentencePiece learned pieces of them that no encoding could use."""
    src, tgt = sides
    train_tokenizer([line + "\u200b" for line in src], [f"\u200e{line}\ufeff" for line in tgt],
                    TokenizerConfig(vocab_size=150, character_coverage=1.0), tmp_path)
    tok = Tokenizer.from_folder(tmp_path)
    pieces = {tok.tgt.id_to_piece(i) for i in range(tok.tgt_vocab)}
    assert not any(mark in piece for piece in pieces for mark in "\u200b\u200e\ufeff")


def test_a_vocabulary_size_sentencepiece_cannot_read_is_one_line(tmp_path, sides):
    """2**31 pieces passed the config's check and SentencePiece's ValueError was a traceback."""
    with pytest.raises(TokenizerError, match=r"cannot parse \"2147483648\" as int.*tokenizer.vocab_size=2147483648"):
        train_tokenizer(*sides, TokenizerConfig(vocab_size=2**31), tmp_path)


def test_decoded_text_has_no_space_at_its_ends_or_twice():
    """A translation ending on the word-boundary piece came out as "The " (and its twice, as
    "The   The"): text no training target had, written to the output as it was."""
    tok = Tokenizer.from_folder(SPM200)
    space, the = tok.tgt.piece_to_id("▁"), tok.encode_tgt(["The"])[0]
    assert tok.decode_tgt([the + [space], [space] + the, the + [space, space] + the]) == ["The", "The", "The The"]


def test_a_vocabulary_larger_than_the_text_supports_is_said(tmp_path, sides, caplog):
    """SentencePiece shrinks it (hard_vocab_limit off, for tiny corpora) without a word: a user who
    asked for 50,000 pieces trained on far fewer, unsaid."""
    import logging

    with caplog.at_level(logging.WARNING, logger="nmt.tokenizer"):
        train_tokenizer(*sides, TokenizerConfig(vocab_size=5000), tmp_path / "big")
        train_tokenizer(*sides, TokenizerConfig(vocab_size=150), tmp_path / "fits")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and said[0].startswith("tokenizer.vocab_size=5000 is more pieces than the training text")


def test_a_sampled_training_text_gives_the_same_tokenizer_in_every_run(tmp_path):
    """tokenizer.max_sentences below the training split's lines: SentencePiece's own sampling drew
    another sample in every process, so the pieces (and every weight and score after them)
    changed from run to run. Each run is its own process, as two runs of `nmt tokenize` are."""
    import subprocess
    import sys

    script = ("import sys; from nmt.config import DataConfig, TokenizerConfig; from nmt.corpus import read_pairs; "
              "from nmt.tokenizer import train_tokenizer; "
              f"pairs = read_pairs(DataConfig(source={str(TINY_TSV)!r})) * 4; "
              "train_tokenizer([p.src for p in pairs], [p.tgt for p in pairs], "
              "TokenizerConfig(vocab_size=150, max_sentences=200), sys.argv[1])")
    made = []
    for run in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / run)], check=True, capture_output=True)
        made.append((tmp_path / run / "src.model").read_bytes())
    assert made[0] == made[1] == made[2]
    whole = Tokenizer.from_folder(tmp_path / "a")
    assert whole.src_vocab == 150


def test_a_sample_is_of_the_lines_given_in_their_order_and_all_of_them_below_the_limit():
    from nmt.tokenizer import sample_lines

    lines = [f"line {i}" for i in range(1000)]
    kept = sample_lines(lines, 300)
    assert len(kept) == len(set(kept)) == 300 and kept == sorted(kept, key=lines.index)
    assert kept == sample_lines(lines, 300) and kept != lines[:300]
    assert sample_lines(lines, 0) == sample_lines(lines, 1000) == lines


@pytest.mark.parametrize("ids", [dict(bos_id=3, eos_id=2), dict(eos_id=-1, bos_id=2), dict(pad_id=-1, unk_id=0)])
def test_a_sentencepiece_model_with_other_special_ids_is_refused(tmp_path, ids):
    """A model trained elsewhere with </s> (or <s>, <pad>, <unk>) at another id would decode
    without ever ending, or end at once: refused when loaded, on either side."""
    import io

    import sentencepiece as spm

    text = [pair.src for pair in read_pairs(DataConfig(source=str(TINY_TSV)))][:300]
    model = io.BytesIO()
    settings = dict(pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS) | ids
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=100,
                                   minloglevel=2, **settings)
    good = (SPM200 / "src.model").read_bytes()
    for src, tgt in ((model.getvalue(), good), (good, model.getvalue())):
        with pytest.raises(TokenizerError, match="unexpected special ids"):
            Tokenizer(src, tgt)
    Tokenizer(good, good)
