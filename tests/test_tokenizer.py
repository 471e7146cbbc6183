"""Tests for minclip.tokenizer: byte-level BPE like OpenAI CLIP's simple_tokenizer, train_bpe, tokenize."""
import gzip
import importlib.util
import os
import pickle
import sys

import numpy as np
import pytest
from torch_reference import openai, require

from minclip import tokenizer as tokenizer_module
from minclip.tokenizer import (
    PATTERN,
    SimpleTokenizer,
    bytes_to_unicode,
    clean,
    default_bpe_path,
    learn_merges,
    merges_text,
    read_merges_text,
    token_lengths,
    tokenize,
    train_bpe,
)

TRICKY = [
    "a photo of a cat",
    "café naïve Ångström",
    "emoji 🐱🚀 party 🎉",
    "中文字符 and 日本語のテキスト",
    "fish &amp; chips, &lt;b&gt;bold&lt;/b&gt; &amp;lt;double&amp;gt;",
    "don't stop, it's we're I've I'm you'll he'd",
    "1234 items, 3.14 pi",
    "  lots \t of\n\n   whitespace   ",
    "",
    "UPPER Case MiXeD",
    "symbols !!! ??? ... --- ### $$$",
    "Ã©tÃ© mojibake",
]

CAPTIONS = ["a small red triangle in the top left", "a large blue circle in the bottom right",
            "a small green square in the center", "a red circle and a blue square",
            "two small triangles in the top right"] * 40


def write_merges(path, lines, header="#version: 0.2 test"):
    body = "\n".join(([header] if header else []) + lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(body.encode("utf-8"))
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(body)
    return str(path)


@pytest.fixture(scope="module")
def hello_tok(tmp_path_factory):
    # 4 merges -> ids 512..515, then <|startoftext|> = 516, <|endoftext|> = 517.
    path = write_merges(tmp_path_factory.mktemp("bpe") / "hello.txt.gz", ["h e", "l l", "he ll", "hell o</w>"])
    return SimpleTokenizer(path)


@pytest.fixture(scope="module")
def trained_tok(tmp_path_factory):
    path = train_bpe(CAPTIONS, 600, tmp_path_factory.mktemp("bpe") / "shapes.txt.gz")
    return SimpleTokenizer(path)


def expected_roundtrip(text):
    """What OpenAI's decode(encode(text)) gives: each pre-token of the cleaned text plus a space."""
    return "".join(tok + " " for tok in PATTERN.findall(clean(text)))


# ---------------------------------------------------------------------------- vocabulary and known ids

def test_byte_table_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("!")] == "!" and table[ord(" ")] == chr(256 + 32)  # space is shifted out of the way


def test_vocab_layout_and_known_ids(hello_tok):
    t = hello_tok
    assert t.vocab_size == 518 and len(t.encoder) == 518
    assert (t.sot_token, t.eot_token) == (516, 517)
    # Printable ASCII comes first in the byte table: id('h') = ord('h') - ord('!') = 71; 'h</w>' = 256 + 71.
    assert t.encoder["h"] == 71 and t.encoder["h</w>"] == 327
    assert [t.encoder[s] for s in ["he", "ll", "hell", "hello</w>"]] == [512, 513, 514, 515]
    assert t.bpe_ranks[("he", "ll")] == 2
    assert t.encode("hello") == [515]                      # h e l l o</w> -> he ll o</w> -> hell o</w> -> hello</w>
    assert t.encode("Hell") == [512, 75, 331]              # he l l</w>: ("l", "l</w>") is not a merge
    assert t.encode("oh!") == [78, 327, 256]               # o h</w> !</w>
    assert t.encode("hello hello") == [515, 515]
    assert t.encode("") == []
    assert t.encode("<|startoftext|>x<|endoftext|>") == [516, ord("x") - 33 + 256, 517]
    assert t.bpe("hello") == "hello</w>" and t.bpe("hell") == "he l l</w>"


def test_bpe_picks_lowest_rank_first(tmp_path):
    # "abc" with ranks b c (0) < a b (1): b c wins, so a b can no longer apply.
    t = SimpleTokenizer(write_merges(tmp_path / "m.txt", ["b c</w>", "a b"]))
    assert t.bpe("abc") == "a bc</w>"
    t2 = SimpleTokenizer(write_merges(tmp_path / "m2.txt", ["a b", "b c</w>"]))
    assert t2.bpe("abc") == "ab c</w>"
    # Overlapping pairs merge left to right: l l l -> ll l.
    t3 = SimpleTokenizer(write_merges(tmp_path / "m3.txt", ["l l"]))
    assert t3.bpe("lll") == "ll l</w>"


def test_plain_and_gzip_files_and_headerless(tmp_path):
    lines = ["h e", "l l", "he ll", "hell o</w>"]
    a = SimpleTokenizer(write_merges(tmp_path / "m.txt", lines))
    b = SimpleTokenizer(write_merges(tmp_path / "m.txt.gz", lines))
    c = SimpleTokenizer(write_merges(tmp_path / "noheader.txt", lines, header=None))
    # OpenAI's real file begins with this odd line (a gzip artefact); it must be skipped, not read as a merge.
    d = SimpleTokenizer(write_merges(tmp_path / "odd.txt.gz", lines, header='"bpe_simple_vocab_16e6.txt#version: 0.2'))
    assert a.encoder == b.encoder == c.encoder == d.encoder and a.encode("hello") == [515]


# ---------------------------------------------------------------------------- round trips on tricky text

@pytest.mark.parametrize("text", TRICKY)
def test_roundtrip_byte_level(hello_tok, text):
    # With only 4 merges almost everything is single bytes, so this exercises the byte table.
    assert hello_tok.decode(hello_tok.encode(text)) == expected_roundtrip(text)


@pytest.mark.parametrize("text", TRICKY)
def test_roundtrip_trained(trained_tok, text):
    assert trained_tok.decode(trained_tok.encode(text)) == expected_roundtrip(text)


def test_cleaning_details():
    assert clean("fish &amp; chips") == "fish & chips"
    assert clean("&amp;lt;b&amp;gt;") == "<b>"               # unescaped twice
    assert clean("  A\t\nB  ") == "a b"
    assert expected_roundtrip("don't, 1234") == "don 't , 1 2 3 4 "
    assert expected_roundtrip("a photo") == "a photo "         # OpenAI's decode leaves a trailing space


def test_decode_special_tokens_and_arrays(hello_tok):
    t = hello_tok
    row = tokenize("hello oh", context_length=10, tokenizer=t)[0]
    raw = t.decode(row)                                       # OpenAI's behaviour: specials as text, 0 = "!"
    assert raw.startswith("<|startoftext|>hello oh <|endoftext|>") and raw.endswith("!")
    assert t.decode(row, skip_special_tokens=True) == "hello oh "  # SOT dropped, stops at EOT, padding ignored
    with pytest.raises(ValueError, match="outside the vocabulary"):
        t.decode([10_000])


def test_decode_invalid_utf8_is_replaced(hello_tok):
    ids = hello_tok.encode("🐱")
    assert len(ids) == 4                                      # 4 UTF-8 bytes, no merges
    assert hello_tok.decode(ids[:2]) == "\ufffd"


def test_cache_is_bounded_and_pickles(tmp_path):
    t = SimpleTokenizer(write_merges(tmp_path / "m.txt", ["h e"]), cache_size=3)
    for w in ["a", "b", "c", "d", "e"]:
        t.encode(w)
    assert len(t.cache) <= 3
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.encode("hehe") == t.encode("hehe")


# ---------------------------------------------------------------------------- malformed files and defaults

@pytest.mark.parametrize("bad, lineno", [("h e f", 3), ("lonely", 3), ("", 3)])
def test_malformed_merges_name_file_and_line(tmp_path, bad, lineno):
    path = write_merges(tmp_path / "bad.txt", ["h e", bad, "l l"])
    with pytest.raises(ValueError, match=rf"bad\.txt, line {lineno}"):
        SimpleTokenizer(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        SimpleTokenizer(tmp_path / "nope.txt.gz")


def test_default_bpe_path_kinds():
    with pytest.raises(ValueError, match="kind"):
        default_bpe_path("gpt2")
    path = default_bpe_path("shapes")
    assert path.endswith("bpe_shapes.txt.gz") and os.path.isfile(path)


def test_missing_openai_merges_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "_find_package_file", lambda package, name: None)  # none installed
    monkeypatch.setenv("MINCLIP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cache" / "bpe_simple_vocab_16e6.txt.gz")):
        default_bpe_path("openai")
    assert default_bpe_path("auto").endswith("bpe_shapes.txt.gz")
    (tmp_path / "cache").mkdir()
    write_merges(tmp_path / "cache" / "bpe_simple_vocab_16e6.txt.gz", ["h e"])
    assert default_bpe_path("openai") == str(tmp_path / "cache" / "bpe_simple_vocab_16e6.txt.gz")


def test_tokenizer_from_merges_in_memory_and_call():
    merges = learn_merges(CAPTIONS, 560)
    tok = SimpleTokenizer(merges=merges, trained_length=9)
    assert tok.bpe_path is None and tok.merges == merges and tok.trained_length == 9
    assert tok(["a red circle"], context_length=6).shape == (1, 6)
    assert read_merges_text(merges_text(merges)) == merges
    assert token_lengths(["a red circle", ""], tok).tolist() == [5, 2]


def test_default_bpe_path_finds_installed_clip(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "clip", raising=False)  # find_spec would answer from an imported one
    pkg = tmp_path / "clip"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('find_spec must not import the package')\n")
    write_merges(pkg / "bpe_simple_vocab_16e6.txt.gz", ["h e"])
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert default_bpe_path("openai") == str(pkg / "bpe_simple_vocab_16e6.txt.gz")
    assert default_bpe_path("auto") == str(pkg / "bpe_simple_vocab_16e6.txt.gz")
    assert SimpleTokenizer().vocab_size == 515


# ---------------------------------------------------------------------------- train_bpe

def test_train_bpe_learns_frequent_words(tmp_path, trained_tok):
    t = trained_tok
    assert t.vocab_size <= 600                                # this tiny corpus runs out of pairs first
    for word in ["a", "small", "red", "triangle", "circle", "square", "in", "the", "top", "left"]:
        assert len(t.encode(word)) == 1, word
    assert len(t.encode("a small red triangle in the top left")) == 8
    assert len(t.encode("zebra")) > 1                         # never seen: spelled out in pieces


def test_train_bpe_is_deterministic_and_writes_header(tmp_path):
    p1 = train_bpe(CAPTIONS, 560, tmp_path / "a.txt.gz")
    p2 = train_bpe(list(reversed(CAPTIONS)), 560, tmp_path / "b.txt.gz")
    assert open(p1, "rb").read() == open(p2, "rb").read()
    lines = gzip.open(p1).read().decode("utf-8").splitlines()
    assert lines[0].startswith("#version") and len(lines) == 1 + 560 - 514
    assert not gzip.open(p1).read().endswith(b"\n")          # see train_bpe: keeps OpenAI's loader in step
    plain = train_bpe(CAPTIONS, 560, tmp_path / "c.txt")
    assert open(plain, encoding="utf-8").read().splitlines() == lines


def test_train_bpe_stops_when_no_pairs_left(tmp_path):
    path = train_bpe(["ab ab ab"], 10_000, tmp_path / "tiny.txt")
    assert open(path).read().splitlines()[1:] == ["a b</w>"]
    assert SimpleTokenizer(path).vocab_size == 515


def test_train_bpe_rejects_small_vocab(tmp_path):
    with pytest.raises(ValueError, match="514"):
        train_bpe(CAPTIONS, 513, tmp_path / "x.txt")


def test_train_bpe_tie_break_is_lexicographic(tmp_path):
    # Pairs (a, b) and (c, d) both occur twice; the smaller pair is merged first.
    path = train_bpe(["cd ab"], 515, tmp_path / "t.txt")
    assert open(path).read().splitlines()[1:] == ["a b</w>"]


# ---------------------------------------------------------------------------- tokenize

def test_tokenize_shape_dtype_positions(hello_tok):
    out = tokenize(["hello", "oh hello", ""], context_length=8, tokenizer=hello_tok)
    assert out.shape == (3, 8) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0], [516, 515, 517, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[1], [516, 78, 327, 515, 517, 0, 0, 0])
    np.testing.assert_array_equal(out[2], [516, 517, 0, 0, 0, 0, 0, 0])
    single = tokenize("hello", context_length=8, tokenizer=hello_tok)
    np.testing.assert_array_equal(single, out[:1])
    assert tokenize([], tokenizer=hello_tok).shape == (0, 77)


def test_tokenize_too_long_raises_or_truncates(hello_tok):
    text = "hello " * 10
    with pytest.raises(ValueError, match=r"'hello hello.*12 tokens long.*context_length is 8.*truncate=True"):
        tokenize(text, context_length=8, tokenizer=hello_tok)
    out = tokenize([text, "oh"], context_length=8, truncate=True, tokenizer=hello_tok)
    np.testing.assert_array_equal(out[0], [516] + [515] * 6 + [517])
    np.testing.assert_array_equal(out[1], [516, 78, 327, 517, 0, 0, 0, 0])
    exact = tokenize("hello " * 6, context_length=8, tokenizer=hello_tok)   # fits exactly: no error
    assert exact[0, -1] == 517


def test_tokenize_bad_inputs(hello_tok):
    with pytest.raises(TypeError):
        tokenize(["ok", 3], tokenizer=hello_tok)
    with pytest.raises(ValueError, match="context_length"):
        tokenize("x", context_length=1, tokenizer=hello_tok)


# ---------------------------------------------------------------------------- parity with OpenAI's tokenizer

def _reference_tokenizer():
    """(OpenAI's SimpleTokenizer class, the path of OpenAI's merges file) from clip-anytorch (torch_reference)."""
    require("simple_tokenizer")
    ref = openai("simple_tokenizer")
    return ref.SimpleTokenizer, ref.default_bpe()


def test_parity_with_openai_tokenizer():
    Ref, bpe = _reference_tokenizer()
    ref, ours = Ref(bpe), SimpleTokenizer(bpe)
    assert ours.vocab_size == 49408 and len(ref.decoder) == 49408
    assert ours.bpe_ranks == ref.bpe_ranks
    texts = TRICKY + CAPTIONS[:5] + ["a diagram of a neural network", "xyzzy plugh",
                                     "<|startoftext|> literal specials <|endoftext|>"]
    for text in texts:
        ids = ours.encode(text)
        assert ids == ref.encode(text), text
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids)
    assert ours.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


def test_trained_file_loads_identically_in_openai_tokenizer(tmp_path):
    Ref, _ = _reference_tokenizer()
    path = train_bpe(CAPTIONS, 540, tmp_path / "shapes.txt.gz")
    ref, ours = Ref(path), SimpleTokenizer(path)
    assert len(ref.decoder) == ours.vocab_size == 540
    for text in CAPTIONS[:5] + ["zebra crossing at noon"]:
        assert ref.encode(text) == ours.encode(text)
