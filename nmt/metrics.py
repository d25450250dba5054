"""Corpus scores from sacreBLEU, each with its signature, on detokenised text."""

from __future__ import annotations

import importlib.util

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from nmt.errors import NmtError

METRICS = {"bleu": BLEU, "chrf": CHRF, "ter": TER}


# ISO 639-2/3 codes (and Chinese's macrolanguage members, which hub datasets use: FLORES-200's
# zho_Hans, cmn) of the languages whose BLEU is not 13a's, to the two-letter code
_SAME = {"zho": "zh", "chi": "zh", "cmn": "zh", "yue": "zh", "wuu": "zh", "hak": "zh", "nan": "zh", "gan": "zh",
         "hsn": "zh", "lzh": "zh", "jpn": "ja", "kor": "ko", "tha": "th", "lao": "lo", "khm": "km", "mya": "my",
         "bur": "my", "bod": "bo", "tib": "bo", "dzo": "dz"}
# written without spaces between words, and no sacreBLEU tokeniser of their own that needs no download
# (flores200's is a SentencePiece model fetched at first use): BLEU over characters
_UNSPACED = ("th", "lo", "km", "my", "bo", "dz")


def _base(lang: str) -> str:
    """The language of a code: zh of zh-TW, pt of pt_BR, zh of zho_Hans, th of tha."""
    base = lang.replace("_", "-").split("-")[0].lower()
    return _SAME.get(base, base)


def bleu_tokenizer(lang: str) -> str:
    """BLEU's tokeniser for target language ``lang``, as sacreBLEU's command line picks it (-l):
    ``zh`` for Chinese, ``ja-mecab`` / ``ko-mecab`` for Japanese / Korean where MeCab is installed,
    characters (``char``) for Thai, Lao, Khmer, Burmese, Tibetan and Dzongkha, else 13a. 13a splits
    only at spaces and punctuation, so it scored a Chinese or Japanese translation next to nothing,
    and a Thai one 0.00 whatever it said (each sentence one word): training's dev BLEU stayed 0, so
    best stayed the first checkpoint and early stopping ended the run. Without MeCab, Japanese is
    split into characters too."""
    base = _base(lang)
    if base == "zh":
        return "zh"
    if base in ("ja", "ko"):
        if importlib.util.find_spec("MeCab") is not None:
            return f"{base}-mecab"
        return "char" if base == "ja" else "13a"  # Korean puts spaces between words
    return "char" if base in _UNSPACED else "13a"


def metric(name: str, lang: str = "") -> Metric:
    """sacreBLEU's metric ``name`` (bleu, chrf, ter) for translations into ``lang`` ("": 13a BLEU).
    TER into Chinese or Japanese splits their characters (sacreBLEU's --ter-normalized
    --ter-asian-support): its default splits at spaces only, so an unspaced sentence was one word
    and TER the share of sentences not matched exactly (one letter off in each: TER 100)."""
    if name == "bleu":
        return BLEU(tokenize=bleu_tokenizer(lang))
    if name == "ter" and _base(lang) in ("zh", "ja"):
        return TER(normalized=True, asian_support=True)
    return METRICS[name]()


def cli_options(lang: str) -> str:
    """The sacrebleu command line's options that score as ``metric`` does for ``lang``."""
    tokenizer = bleu_tokenizer(lang)
    return " ".join([f"-tok {tokenizer}"] * (tokenizer != "13a")
                    + ["--ter-normalized --ter-asian-support"] * (_base(lang) in ("zh", "ja")))


def corpus_scores(hyps: list[str], refs: list[str], metrics: tuple[str, ...] = ("bleu", "chrf", "ter"),
                  lang: str = "") -> dict:
    """{name: {"score", "signature", "text"}} for each metric, on translations into ``lang``:
    sacreBLEU's defaults, BLEU's tokeniser by the language (``bleu_tokenizer``)."""
    if len(hyps) != len(refs):
        raise NmtError(f"{len(hyps)} hypotheses but {len(refs)} references: line counts must match")
    out = {}
    for name in metrics:
        scorer = metric(name, lang)
        result = scorer.corpus_score(hyps, [refs])
        out[name] = {
            "score": round(float(result.score), 4),
            "signature": str(scorer.get_signature()),
            "text": str(result),
        }
    return out


def sentence_chrf(hyp: str, ref: str) -> float:
    return float(CHRF().sentence_score(hyp, [ref]).score)
