"""Byte-level BPE tokenizer for CLIP's text encoder (Section 2.4), and a BPE trainer for your captions.

Re-implements OpenAI's `clip/simple_tokenizer.py`, so the ids are identical for the same merges file:

    text --ftfy/html clean, collapse whitespace, lowercase--> "a photo of a cat"
         --regex pre-tokenisation, bytes as printable unicode--> ["a", "photo", "of", "a", "cat"]
         --BPE merges, last symbol marked with "</w>"--> ["a</w>", "photo</w>", ...]
         --vocabulary lookup--> [320, 1125, 539, 320, 2368]

A model must be used with the merges it was trained with: `minclip train` learns them on the run's
captions (`learn_merges`, Sennrich et al. 2016) and stores them in every checkpoint. Named files,
never downloaded: "openai" (49,408 ids, the released models; from an installed `clip`/`open_clip`
or $MINCLIP_CACHE) and "shapes" (minclip's small file for the Shapes captions).
"""
import functools
import gzip
import html
import importlib.util
import os

import numpy as np
import regex as re

# The vocabulary: 256 byte symbols, the same 256 ending a word ("</w>"), one id per merge, then SOT and EOT.
BYTE_SYMBOLS, SPECIAL_TOKENS = 2 * 256, 2
BASE_VOCAB_SIZE = BYTE_SYMBOLS + SPECIAL_TOKENS  # 514: the ids of a tokenizer with no merges
# OpenAI keeps merges[1 : 49152 - 256 - 2 + 1]: 48,894 merges, so 256 + 256 + 48,894 + 2 = 49,408 ids.
MAX_MERGES = 49152 - 256 - 2
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# Special tokens first (so they survive as one piece), then English contractions, then runs of
# letters, single digits (numbers are spelled digit by digit), and runs of other symbols.
# Whitespace matches nothing, so it is dropped; decode() puts a space after every word instead.
PATTERN = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                     re.IGNORECASE)
OPENAI_VOCAB_SIZE = BASE_VOCAB_SIZE + MAX_MERGES  # 49,408: the vocabulary of every released CLIP
_OPENAI_FILE = "bpe_simple_vocab_16e6.txt.gz"
_SHAPES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_shapes.txt.gz")


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
    import ftfy  # here, not at the top: it takes longer to import than the rest of minclip's text code
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


def cache_dir():
    """The folder where minclip looks for files it never downloads: $MINCLIP_CACHE or ~/.cache/minclip."""
    return os.environ.get("MINCLIP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minclip")


def default_bpe_path(kind="auto"):
    """Path of a named merges file found on this machine (nothing is ever downloaded).

    kind="openai": OpenAI's file, inside an installed `clip` or `open_clip` package or in cache_dir().
    kind="shapes": the small file learnt on Shapes captions, shipped with minclip.
    kind="auto":   "openai" if found, else "shapes".
    Raises FileNotFoundError saying where to put the file.
    """
    if kind not in ("auto", "openai", "shapes"):
        raise ValueError(f"default_bpe_path: kind must be 'auto', 'openai' or 'shapes', got {kind!r}")
    if kind in ("auto", "openai"):
        for package in ("clip", "open_clip"):
            path = _find_package_file(package, _OPENAI_FILE)
            if path:
                return path
        path = os.path.join(cache_dir(), _OPENAI_FILE)
        if os.path.isfile(path):
            return path
        if kind == "openai":
            raise FileNotFoundError(
                f"OpenAI's BPE merges file {_OPENAI_FILE} was not found: put it at {path} (it ships inside "
                f"OpenAI's `clip` package as clip/{_OPENAI_FILE}, and in open_clip) or install `clip` or `open_clip`")
    if not os.path.isfile(_SHAPES_FILE):
        raise FileNotFoundError(f"minclip's merges file {_SHAPES_FILE} is missing: reinstall minclip")
    return _SHAPES_FILE


def read_merges(path):
    """Read a merges file -> list of (str, str) pairs in rank order (at most MAX_MERGES).

    Format: an optional first line containing "#version" (a header, skipped), then one merge "a b"
    per line in rank order. Plain text or gzip (told from the bytes, not the name)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic number
        data = gzip.decompress(data)
    return read_merges_text(data.decode("utf-8"), path)


def read_merges_text(text, source="merges"):
    """The text of a merges file -> list of (str, str) pairs; `source` names it in errors."""
    lines = text.split("\n")
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
            raise ValueError(f"merges file {source}, line {lineno}: expected two space-separated symbols "
                             f"like 'h e', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class SimpleTokenizer:
    """OpenAI CLIP's byte-level BPE tokenizer.

    Vocabulary (ids in this order, exactly as OpenAI builds it): the 256 byte characters, the same
    256 with "</w>" appended (a word ending in that byte), one entry per merge (the two symbols
    joined), then "<|startoftext|>" and "<|endoftext|>". So vocab_size = BASE_VOCAB_SIZE (514) + n_merges.

    bpe_path: a merges file (default: default_bpe_path("auto")), or merges: a list of (str, str) pairs
    in rank order, e.g. from learn_merges or a checkpoint. trained_length: the longest token row
    (SOT and EOT included) the model was trained on, if known; prompts longer than it reach
    positions whose embeddings never learnt anything (evaluate.text_tokenize_fn warns about such prompts).
    Attributes: encoder {str: int}, decoder {int: str}, bpe_ranks {(str, str): rank}, merges,
    byte_encoder {int: str}, byte_decoder {str: int}, sot_token, eot_token (ints), vocab_size.
    """

    def __init__(self, bpe_path=None, cache_size=100_000, merges=None, trained_length=None):
        if merges is None:
            self.bpe_path = default_bpe_path("auto") if bpe_path is None else os.fspath(bpe_path)
            merges = read_merges(self.bpe_path)
        else:
            self.bpe_path = None
            merges = [tuple(m) for m in merges]
        self.merges, self.trained_length = merges, trained_length
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
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

    def __call__(self, texts, context_length=77, truncate=True):
        """tokenize(texts, context_length, truncate, tokenizer=self): how loaders and evaluation call it."""
        return tokenize(texts, context_length, truncate=truncate, tokenizer=self)

    def decode(self, tokens, skip_special_tokens=False):
        """Sequence of ids (list or 1-D array) -> str, e.g. [320, 1125] -> "a photo ".

        Like OpenAI's decode, every end of word becomes a space, so the result has a trailing space
        and pre-tokens come back space-separated ("it's" -> "it 's "), and <|startoftext|> and
        <|endoftext|> are rendered as text. skip_special_tokens=True drops <|startoftext|> and stops
        at the first <|endoftext|>, so a padded row of tokenize() decodes to its caption alone.
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

    Shared by SimpleTokenizer.bpe and learn_merges so that training and encoding segment a word the
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


def _word_counts(texts, byte_encoder):
    """{byte-encoded word: count} over the captions. Captions repeat a lot, so each distinct caption
    is cleaned once (ftfy is slow)."""
    caption_counts = {}
    for t in texts:
        caption_counts[t] = caption_counts.get(t, 0) + 1
    word_counts = {}
    for caption, n in caption_counts.items():
        for w in _words(clean(caption), byte_encoder):
            if w not in (SOT, EOT):  # special tokens are never split, so they teach no merges
                word_counts[w] = word_counts.get(w, 0) + n
    return word_counts


def learn_merges(texts, vocab_size):
    """Learn byte-level BPE merges from captions: list of (str, str) pairs in rank order.

    texts: iterable of str. vocab_size: total ids wanted = BASE_VOCAB_SIZE (514) + n_merges.
    Uses the tokenizer's own cleaning, pre-tokenisation, byte table and "</w>" convention, so the
    merges apply directly in SimpleTokenizer. Sennrich et al.'s algorithm on word counts: merge the
    most frequent adjacent pair (ties: the lexicographically smallest pair, for determinism) until
    vocab_size is reached or every word is a single symbol.
    """
    if vocab_size < BASE_VOCAB_SIZE:
        raise ValueError(f"learn_merges: vocab_size must be >= {BASE_VOCAB_SIZE} (256 bytes + 256 bytes with </w> + "
                         f"<|startoftext|> + <|endoftext|>), got {vocab_size}")
    if vocab_size > OPENAI_VOCAB_SIZE:
        raise ValueError(f"learn_merges: vocab_size must be <= {OPENAI_VOCAB_SIZE} (SimpleTokenizer reads at most "
                         f"{MAX_MERGES} merges, like OpenAI's), got {vocab_size}")
    if isinstance(texts, str):
        texts = [texts]
    word_counts = _word_counts(texts, bytes_to_unicode())
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
    while len(merges) < vocab_size - BASE_VOCAB_SIZE and pair_counts:
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
    return merges


def merges_text(merges):
    """The text of a merges file for `merges`, header first. No newline after the last merge:
    OpenAI's loader (split on "\n", then a slice) would read a trailing empty line as an extra
    vocabulary entry and shift <|startoftext|>/<|endoftext|> by one."""
    return "\n".join(["#version: 0.2 minclip train_bpe"] + [f"{a} {b}" for a, b in merges])


def write_merges(merges, path):
    """Write a merges file; a path ending in ".gz" is gzipped with mtime=0, so the same merges give
    byte-identical files. Returns `path`."""
    body, path = merges_text(merges), os.fspath(path)
    if path.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
            f.write(body.encode("utf-8"))
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(body)
    return path


def train_bpe(texts, vocab_size, path):
    """Learn merges from captions (learn_merges) and write them to a merges file; returns `path`."""
    return write_merges(learn_merges(texts, vocab_size), path)


@functools.lru_cache(maxsize=4)
def get_tokenizer(name):
    """A shared SimpleTokenizer for a named merges file ("openai", "shapes") or a merges file path."""
    if name in ("openai", "shapes"):
        return SimpleTokenizer(default_bpe_path(name))
    if not os.path.isfile(name):
        raise FileNotFoundError(f"tokenizer {name!r} is neither 'openai', 'shapes' nor an existing merges file")
    return SimpleTokenizer(name)


def tokenizer_for(vocab_size):
    """The tokenizer to assume for weights that carry none (an old checkpoint, a bare state_dict):
    OpenAI's merges for OpenAI's 49,408-id vocabulary, the Shapes merges for any other size."""
    tok = get_tokenizer("openai" if vocab_size == OPENAI_VOCAB_SIZE else "shapes")
    if tok.vocab_size > vocab_size:
        raise ValueError(f"tokenizer_for: the merges file {tok.bpe_path} gives {tok.vocab_size} ids but the model "
                         f"has only {vocab_size} token embeddings")
    return tok


def token_lengths(texts, tokenizer):
    """int64 (N,): the length of each text's token row, <|startoftext|> and <|endoftext|> included."""
    return np.array([len(tokenizer.encode(t)) + 2 for t in texts], dtype=np.int64)


def tokenize(texts, context_length=77, truncate=False, tokenizer=None):
    """str or list of str -> int64 array (N, context_length) of token ids, OpenAI's `clip.tokenize`.

    Row i is [sot] + encode(texts[i]) + [eot] followed by zeros. A caption longer than
    context_length raises ValueError unless truncate=True, which cuts it and keeps EOT as the
    last id (the text encoder reads its features at the EOT position, so it must be there).
    tokenizer=None uses get_tokenizer of the "auto" merges file (see default_bpe_path).
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
    tok = get_tokenizer(default_bpe_path("auto")) if tokenizer is None else tokenizer
    result = np.zeros((len(texts), context_length), dtype=np.int64)  # 0 pads; attention is causal, EOT read
    for i, text in enumerate(texts):
        ids = [tok.sot_token] + tok.encode(text) + [tok.eot_token]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(f"tokenize: text {shorten(text)!r} is {len(ids)} tokens long (with <|startoftext|> "
                                 f"and <|endoftext|>) but context_length is {context_length}; "
                                 f"use minclip.tokenize(..., truncate=True)")
            ids = ids[:context_length]
            ids[-1] = tok.eot_token
        result[i, :len(ids)] = ids
    return result


def shorten(text, n=60):
    """`text`, cut to n characters with "..." when longer: for quoting a caption in a message."""
    return text if len(text) <= n else text[:n - 3] + "..."


__all__ = ["OPENAI_VOCAB_SIZE", "SimpleTokenizer", "cache_dir", "default_bpe_path", "get_tokenizer", "learn_merges",
           "merges_text", "read_merges", "read_merges_text", "shorten", "token_lengths", "tokenize", "tokenizer_for",
           "train_bpe", "write_merges"]
