# %% [markdown]
# # a08 · Learning BPE merges
#
# CLIP's text encoder reads "a lower-cased byte pair encoding (BPE) representation of the text with a
# 49,152 vocab size (Sennrich et al., 2015)" (section 2.4). BPE starts from single characters and
# repeatedly merges the most frequent adjacent pair of symbols into one new symbol. Its merges file is
# the list of merges in the order they were learned.
#
# A word is a tuple of symbols; its last symbol carries the end-of-word mark `</w>`, so "low" is
# `('l', 'o', 'w</w>')` and a merge never joins the end of one word to the start of the next.
# The corpus is a dict `{word: count}`. Each step:
# 1. count every adjacent pair, each weighted by its word's count;
# 2. pick the most frequent pair; on a tie the smallest pair in Python's ordering (so results are
#    reproducible): `min(counts, key=lambda p: (-counts[p], p))`;
# 3. replace every occurrence of the pair in every word, left to right, by the joined symbol.

# %% setup
import tempfile

import numpy as np

from minclip import Tensor, backend, gradcheck
from minclip.gradcheck import check_close, check_grad
from minclip.tokenizer import _words, bytes_to_unicode, clean, read_merges, train_bpe

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)


def word_counts(texts):
    """Captions -> {word as a tuple of symbols: count}, cleaned and split the way minclip's tokenizer does."""
    byte_encoder, tally = bytes_to_unicode(), {}
    for text in texts:
        for w in _words(clean(text), byte_encoder):
            word = tuple(w[:-1]) + (w[-1] + "</w>",)
            tally[word] = tally.get(word, 0) + 1
    return tally


def minclip_merges(texts, n_merges):
    """The first n_merges merges minclip's own train_bpe learns from these captions."""
    with tempfile.TemporaryDirectory() as d:
        return read_merges(train_bpe(texts, 514 + n_merges, f"{d}/merges.txt"))

# %% [markdown]
# ## 1. Pair counts and one merge (2 points)

# %% solution a08-pairs
def pair_counts(words):
    """{word tuple: count} -> {(a, b): total count of a followed by b}."""
    ### BEGIN SOLUTION
    counts = {}
    for word, count in words.items():
        for pair in zip(word[:-1], word[1:]):
            counts[pair] = counts.get(pair, 0) + count
    return counts
    ### END SOLUTION


def merge_word(word, pair):
    """Replace each non-overlapping occurrence of `pair` in `word` (left to right) by the joined symbol."""
    ### BEGIN SOLUTION
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
    ### END SOLUTION

# %% test a08-pairs-test 2
got = pair_counts({("l", "o", "w</w>"): 5, ("l", "o", "t</w>"): 2})
assert got == {("l", "o"): 7, ("o", "w</w>"): 5, ("o", "t</w>"): 2}, f"pair_counts of low x5, lot x2 gives {got}"
assert merge_word(("l", "o", "w</w>"), ("l", "o")) == ("lo", "w</w>"), \
    "merge_word(l o w</w>, (l, o)) should be (lo, w</w>)"
got = merge_word(("a", "a", "a</w>"), ("a", "a"))
assert got == ("aa", "a</w>"), f"merge_word(a a a</w>, (a, a)) gives {got}; merge left to right, without overlaps"

# %% [markdown]
# ## 2. The learning loop (4 points)
# Stop after `n_merges` merges, or earlier when no pair is left (every word is one symbol).

# %% solution a08-learn
def learn_merges(words, n_merges):
    """{word tuple: count}, number of merges -> list of (a, b) pairs in the order learned."""
    ### BEGIN SOLUTION
    words, merges = dict(words), []
    while len(merges) < n_merges:
        counts = pair_counts(words)
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        words = {merge_word(w, best): c for w, c in words.items()}
    return merges
    ### END SOLUTION

# %% test a08-learn-test 4
captions = ["a red circle", "a blue circle", "a red square", "a small red triangle", "the red circle"] * 3
want = minclip_merges(captions, 12)
got = learn_merges(word_counts(captions), 12)
assert got == want, f"learn_merges on the shape captions gives\n{got}\nbut minclip's train_bpe learns\n{want}"
### BEGIN HIDDEN TESTS
more = ["lower lowest newer newest", "low low low", "wider widest new"] * 2 + ["a red circle"]
assert learn_merges(word_counts(more), 20) == minclip_merges(more, 20), \
    "learn_merges differs from minclip's train_bpe on a second corpus (ties? counts weighted by word frequency?)"
assert learn_merges({("a", "b</w>"): 1}, 5) == [("a", "b</w>")], "learn_merges must stop when no pair is left"
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# BPE is greedy compression: frequent words end up as one symbol, rare words stay split into pieces, and
# no word is ever out of vocabulary. minclip's `train_bpe` (`minclip/tokenizer.py`) learns the same merges
# but updates only the words a merge touches, so it scales to real caption sets.
