"""Byte-level BPE tokenizer for CLIP's text encoder, plus a small BPE trainer.

CLIP (Radford et al., 2021, section 2.4) feeds its text Transformer "a lower-cased byte pair
encoding (BPE) representation of the text with a 49,152 vocab size", bracketed with [SOS] and
[EOS] tokens, and caps the sequence at 76 (+1) positions. This file re-implements OpenAI's
`clip/simple_tokenizer.py` so that the ids come out identical for the same merges file:

    text --ftfy/html clean, collapse whitespace, lowercase--> "a photo of a cat"
         --regex pre-tokenisation--> ["a", "photo", "of", "a", "cat"]
         --UTF-8 bytes mapped to printable unicode (bytes_to_unicode)--> same here
         --BPE merges, last symbol marked with "</w>"--> ["a</w>", "photo</w>", ...]
         --vocabulary lookup--> [320, 1125, 539, 320, 2368]

References: Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units"
(the merge algorithm); Radford et al. 2019 (GPT-2: byte-level BPE and `bytes_to_unicode`).

Which merges file is used
-------------------------
`SimpleTokenizer(bpe_path=None)` never downloads anything. It looks for
  1. OpenAI's `bpe_simple_vocab_16e6.txt.gz` inside an installed `clip` or `open_clip` package
     (48,894 merges -> vocab_size 49,408, the ids of the released CLIP checkpoints), else
  2. minclip's own small `bpe_shapes.txt.gz` shipped next to this file (trained with `train_bpe`
     on the built-in shapes captions, so a from-scratch model gets a small embedding table).
`default_bpe_path(kind)` picks one explicitly: kind="openai", "minclip" or "auto" (the order above).
Note the two files give different ids: a model must be used with the vocabulary it was built for.

Merges file format: an optional first line containing "#version" (a header, skipped), then one
merge "a b" per line in priority order. Plain text or gzip (detected from the bytes, not the name).
"""
import functools
import gzip
import html
import importlib.util
import os

import ftfy
import numpy as np
import regex as re

# OpenAI keeps merges[1 : 49152 - 256 - 2 + 1]: 48,894 merges, so 256 + 256 + 48,894 + 2 = 49,408 ids.
MAX_MERGES = 49152 - 256 - 2
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# Special tokens first (so they survive as one piece), then English contractions, then runs of
# letters, single digits (numbers are spelled digit by digit), and runs of other symbols.
# Whitespace matches nothing, so it is dropped; decode() puts a space after every word instead.
PATTERN = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                     re.IGNORECASE)
_OPENAI_FILE = "bpe_simple_vocab_16e6.txt.gz"
_MINCLIP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_shapes.txt.gz")


@functools.lru_cache()
def bytes_to_unicode():
    """The 256 bytes -> 256 printable unicode characters (GPT-2's table), as a dict {int: str}.

    BPE works on strings and merges files are text with space separators, so every byte needs a
    visible, non-space stand-in. Printable Latin-1 bytes map to themselves; the other 68
    (control chars, space, ...) are shifted to chr(256 + n). Insertion order defines ids 0..255.
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def basic_clean(text):
    """Repair mojibake (ftfy) and HTML entities (twice, for "&amp;lt;"-style double escapes)."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    """Collapse every run of whitespace (spaces, tabs, newlines) into one space."""
    return re.sub(r"\s+", " ", text).strip()


def clean(text):
    """The full normalisation applied before pre-tokenisation: str -> str."""
    return whitespace_clean(basic_clean(text)).lower()


def _words(text, byte_encoder):
    """Pre-tokenise cleaned text into byte-encoded words, e.g. "it's!" -> ["it", "'s", "!"]."""
    return ["".join(byte_encoder[b] for b in tok.encode("utf-8")) for tok in PATTERN.findall(text)]


def get_pairs(word):
    """Set of adjacent symbol pairs in a word given as a tuple of symbols."""
    return set(zip(word[:-1], word[1:]))


def _find_package_file(package, filename):
    """Path of `filename` inside an installed package, or None. find_spec does not import it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None


def default_bpe_path(kind="auto"):
    """Path of a merges file found on this machine (nothing is ever downloaded).

    kind="openai":  OpenAI's file inside an installed `clip` or `open_clip` package.
    kind="minclip": the small file shipped with minclip (minclip/bpe_shapes.txt.gz).
    kind="auto":    "openai" if found, else "minclip".
    Raises FileNotFoundError naming every place searched.
    """
    if kind not in ("auto", "openai", "minclip"):
        raise ValueError(f"default_bpe_path: kind must be 'auto', 'openai' or 'minclip', got {kind!r}")
    searched = []
    if kind in ("auto", "openai"):
        for package in ("clip", "open_clip"):
            path = _find_package_file(package, _OPENAI_FILE)
            if path:
                return path
            searched.append(f"{_OPENAI_FILE} in an installed '{package}' package")
    if kind in ("auto", "minclip"):
        if os.path.isfile(_MINCLIP_FILE):
            return _MINCLIP_FILE
        searched.append(_MINCLIP_FILE)
    raise FileNotFoundError("no BPE merges file found; searched: " + "; ".join(searched) +
                            ". Install OpenAI's `clip` (or `open_clip`), or make one with "
                            "minclip.tokenizer.train_bpe(captions, vocab_size, path) and pass bpe_path=path.")


def read_merges(path):
    """Read a merges file -> list of (str, str) pairs in rank order (at most MAX_MERGES)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic number
        data = gzip.decompress(data)
    lines = data.decode("utf-8").split("\n")
    while lines and not lines[-1].strip():  # the trailing newline leaves an empty last line
        lines.pop()
    # OpenAI's own file starts with '"bpe_simple_vocab_16e6.txt#version: 0.2' (a gzip artefact), and
    # OpenAI skips line 1 unconditionally; we skip it when it is such a header, so hand-written
    # files without one lose no merge.
    start = 1 if lines and "#version" in lines[0] else 0
    merges = []
    for lineno, line in enumerate(lines[start:start + MAX_MERGES], start=start + 1):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"merges file {path}, line {lineno}: expected two space-separated symbols "
                             f"like 'h e', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class SimpleTokenizer:
    """OpenAI CLIP's byte-level BPE tokenizer.

    Vocabulary (ids in this order, exactly as OpenAI builds it): the 256 byte characters, the same
    256 with "</w>" appended (a word ending in that byte), one entry per merge (the two symbols
    joined), then "<|startoftext|>" and "<|endoftext|>". So vocab_size = 512 + n_merges + 2.

    Attributes: encoder {str: int}, decoder {int: str}, bpe_ranks {(str, str): rank},
    byte_encoder {int: str}, byte_decoder {str: int}, sot_token, eot_token (ints), vocab_size.
    """

    def __init__(self, bpe_path=None, cache_size=100_000):
        self.bpe_path = default_bpe_path("auto") if bpe_path is None else os.fspath(bpe_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = read_merges(self.bpe_path)
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += [SOT, EOT]
        self.vocab_size = len(vocab)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))  # lower rank = learned earlier = merged first
        self.sot_token, self.eot_token = self.encoder[SOT], self.encoder[EOT]
        # Captions repeat the same few thousand words, so memoising bpe() is the big speed win.
        # OpenAI's dict grows forever; ours is cleared when full so a stream of unique words
        # (e.g. random ids in captions) cannot eat memory. A plain dict also pickles, for workers.
        self.cache_size = cache_size
        self.cache = {}

    def bpe(self, token):
        """One pre-token (byte-encoded str) -> its BPE symbols joined by spaces.

        e.g. "hello" -> "hello</w>" if the merges cover it, else something like "hel lo</w>".
        Greedy: repeatedly merge the adjacent pair with the lowest rank until none is in the table.
        """
        if token in (SOT, EOT):  # special tokens are whole vocabulary entries, never split
            return token
        cached = self.cache.get(token)  # one lookup: loader threads may clear the cache between two
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)  # the last symbol carries the end-of-word mark
        pairs = get_pairs(word)
        while pairs:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            word = _merge_word(word, bigram)
            pairs = get_pairs(word)
        out = " ".join(word)
        if len(self.cache) >= self.cache_size:
            self.cache.clear()
        self.cache[token] = out
        return out

    def encode(self, text):
        """str -> list[int] of BPE ids, without SOT/EOT (tokenize() adds those)."""
        ids = []
        for word in _words(clean(text), self.byte_encoder):
            ids.extend(self.encoder[symbol] for symbol in self.bpe(word).split(" "))
        return ids

    def decode(self, tokens, skip_special_tokens=True):
        """Sequence of ids (list or 1-D array) -> str, e.g. [320, 1125] -> "a photo ".

        Like OpenAI's decode, every end of word becomes a space, so the result has a trailing space
        and pre-tokens come back space-separated ("it's" -> "it 's "). With skip_special_tokens
        (the default) <|startoftext|> is dropped and decoding stops at the first <|endoftext|>,
        so a padded row of tokenize() decodes to its caption; False renders them as text like OpenAI.
        Bytes that do not form valid UTF-8 (e.g. half a cut-off emoji) become U+FFFD.
        """
        symbols = []
        for t in tokens:
            t = int(t)
            if skip_special_tokens and t == self.sot_token:
                continue
            if skip_special_tokens and t == self.eot_token:
                break
            if t not in self.decoder:
                raise ValueError(f"decode: token id {t} is outside the vocabulary (size {self.vocab_size})")
            symbols.append(self.decoder[t])
        text = "".join(symbols)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")


def _merge_word(word, pair):
    """Replace every non-overlapping occurrence of `pair`, left to right: tuple -> tuple.

    Shared by SimpleTokenizer.bpe and train_bpe so that training and encoding segment a word the
    same way, e.g. ("l", "l", "l") with ("l", "l") -> ("ll", "l").
    """
    first, second = pair
    out, i = [], 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(texts, vocab_size, path):
    """Learn byte-level BPE merges from captions and write a merges file; returns `path`.

    texts: iterable of str. vocab_size: total ids wanted = 512 + n_merges + 2 (so >= 514).
    Uses the tokenizer's own cleaning, pre-tokenisation, byte table and "</w>" convention, so the
    merges apply directly in SimpleTokenizer. Sennrich et al.'s algorithm on word counts: merge the
    most frequent adjacent pair (ties: the lexicographically smallest pair, for determinism) until
    vocab_size is reached or every word is a single symbol. A path ending in ".gz" is written
    gzipped with mtime=0, so the same inputs give byte-identical files.
    """
    if vocab_size < 514:
        raise ValueError(f"train_bpe: vocab_size must be >= 514 (256 bytes + 256 bytes with </w> + "
                         f"<|startoftext|> + <|endoftext|>), got {vocab_size}")
    if vocab_size > MAX_MERGES + 514:
        raise ValueError(f"train_bpe: vocab_size must be <= {MAX_MERGES + 514} (SimpleTokenizer reads at most "
                         f"{MAX_MERGES} merges, like OpenAI's), got {vocab_size}")
    if isinstance(texts, str):
        texts = [texts]
    byte_encoder = bytes_to_unicode()

    # Word frequencies. Captions repeat a lot, so clean each distinct caption once (ftfy is slow).
    caption_counts = {}
    for t in texts:
        caption_counts[t] = caption_counts.get(t, 0) + 1
    word_counts = {}
    for caption, n in caption_counts.items():
        for w in _words(clean(caption), byte_encoder):
            if w not in (SOT, EOT):  # special tokens are never split, so they teach no merges
                word_counts[w] = word_counts.get(w, 0) + n
    words = [tuple(w[:-1]) + (w[-1] + "</w>",) for w in word_counts]  # as symbol tuples
    freqs = list(word_counts.values())

    # Pair counts, plus an index pair -> ids of words containing it, so that a merge only
    # revisits the words it changes instead of recounting the whole corpus.
    pair_counts, where = {}, {}
    for i, (word, f) in enumerate(zip(words, freqs)):
        for p in zip(word[:-1], word[1:]):
            pair_counts[p] = pair_counts.get(p, 0) + f
            where.setdefault(p, set()).add(i)

    merges = []
    while len(merges) < vocab_size - 514 and pair_counts:
        best = min(pair_counts, key=lambda p: (-pair_counts[p], p))  # most frequent, then smallest
        merges.append(best)
        for i in sorted(where.pop(best)):
            old, f = words[i], freqs[i]
            new = _merge_word(old, best)
            # Subtract the old word's pairs and add the new word's: simple and exactly right even
            # for overlapping cases like ("l", "l", "l").
            for p in zip(old[:-1], old[1:]):
                pair_counts[p] -= f
                if pair_counts[p] == 0:
                    del pair_counts[p]
            for p in zip(new[:-1], new[1:]):
                pair_counts[p] = pair_counts.get(p, 0) + f
                where.setdefault(p, set()).add(i)
            words[i] = new
        pair_counts.pop(best, None)
        # Stale entries in `where` (words that no longer contain a pair) are harmless: merging a
        # pair a word lacks leaves it unchanged, and its pairs are subtracted then re-added.

    # No newline after the last merge: OpenAI's loader (split on "\n", then a slice) would read a
    # trailing empty line as an extra vocabulary entry and shift <|startoftext|>/<|endoftext|> by one.
    body = "\n".join(["#version: 0.2 minclip train_bpe"] + [f"{a} {b}" for a, b in merges])
    path = os.fspath(path)
    if path.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            f.write(body.encode("utf-8"))
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(body)
    return path


@functools.lru_cache(maxsize=1)
def _default_tokenizer():
    return SimpleTokenizer()


@functools.lru_cache(maxsize=4)
def tokenizer_for(vocab_size):
    """The tokenizer a model with `vocab_size` token embeddings was built for: OpenAI's merges for
    the released checkpoints (49,408 ids), minclip's shipped small merges for everything else.
    minclip's own training and evaluation code tokenizes through this, so a small model never
    receives ids from the big vocabulary just because a `clip` package happens to be installed."""
    tok = SimpleTokenizer(default_bpe_path("openai" if vocab_size == 49408 else "minclip"))
    if tok.vocab_size > vocab_size:
        raise ValueError(f"tokenizer_for: the merges file {tok.bpe_path} gives {tok.vocab_size} ids but the model "
                         f"has only {vocab_size} token embeddings")
    return tok


def tokenize(texts, context_length=77, truncate=False, tokenizer=None):
    """str or list of str -> int64 array (N, context_length) of token ids, OpenAI's `clip.tokenize`.

    Row i is [sot] + encode(texts[i]) + [eot] followed by zeros. A caption longer than
    context_length raises ValueError unless truncate=True, which cuts it and keeps EOT as the
    last id (the text encoder reads its features at the EOT position, so it must be there).
    tokenizer=None uses a shared SimpleTokenizer() (see default_bpe_path for which file).
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"tokenize: expected str or a list of str, got an element of type {type(t).__name__}")
    if context_length < 2:
        raise ValueError(f"tokenize: context_length must be >= 2 (room for <|startoftext|> and <|endoftext|>), "
                         f"got {context_length}")
    tok = _default_tokenizer() if tokenizer is None else tokenizer
    result = np.zeros((len(texts), context_length), dtype=np.int64)  # 0 pads; attention is causal, EOT read
    for i, text in enumerate(texts):
        ids = [tok.sot_token] + tok.encode(text) + [tok.eot_token]
        if len(ids) > context_length:
            if not truncate:
                shown = text if len(text) <= 60 else text[:57] + "..."
                raise ValueError(f"tokenize: text {shown!r} is {len(ids)} tokens long (with <|startoftext|> and "
                                 f"<|endoftext|>) but context_length is {context_length}; "
                                 f"use minclip.tokenize(..., truncate=True)")
            ids = ids[:context_length]
            ids[-1] = tok.eot_token
        result[i, :len(ids)] = ids
    return result


def tokenize_fn_for(vocab_size, context_length):
    """texts -> (N, context_length) ids with the tokenizer of a model with `vocab_size` embeddings,
    truncating long captions (EOT kept): what minclip's loaders and evaluation feed a model."""
    tok = tokenizer_for(vocab_size)
    return lambda texts: tokenize(texts, context_length, truncate=True, tokenizer=tok)


__all__ = ["SimpleTokenizer", "default_bpe_path", "tokenize", "tokenize_fn_for", "tokenizer_for", "train_bpe"]
