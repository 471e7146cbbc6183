"""minclip.objectives: Figure 2's four objectives. Gradient checks (float64) of every new head and loss,
the token bookkeeping, and likelihood scorers that pick the true caption."""
import numpy as np
import pytest
from _helpers import host

from minclip import backend, optim
from minclip.autograd import Tensor
from minclip.gradcheck import gradcheck
from minclip.model import build_visual
from minclip.objectives import (
    BagOfWords,
    BagOfWordsText,
    CaptionLM,
    ContrastiveBoW,
    bag_of_words,
    likelihood_scores,
    predicted_mask,
    word_mask,
)

V, SOT, EOT, D = 20, 18, 19, 8
TOKENS = np.array([[SOT, 3, 5, 3, EOT, 0],
                   [SOT, 7, EOT, 0, 0, 0],
                   [SOT, 2, 4, 6, 8, EOT]])


@pytest.fixture(autouse=True)
def float64():
    backend.manual_seed(0)
    with backend.default_dtype(np.float64):
        yield


def visual():
    return build_visual(embed_dim=D, image_resolution=8, vision_layers=1, vision_width=16, vision_patch_size=4)


def images(n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8))


def rand(*shape, seed=0):
    return Tensor(backend.asarray(np.random.default_rng(seed).standard_normal(shape)), requires_grad=True)


def heads_of(m):
    """The parameters outside the image encoder: those a loss on given image features reaches."""
    visual = {id(p) for p in m.visual.parameters()}
    return [p for p in m.parameters() if id(p) not in visual]


def lm():
    return CaptionLM(visual(), D, context_length=6, vocab_size=V, width=16, heads=2, layers=1)


# ----------------------------------------------------------------------------- token bookkeeping
def test_word_mask_and_bag_of_words():
    np.testing.assert_array_equal(word_mask(TOKENS), [[0, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(predicted_mask(TOKENS), [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    bag = bag_of_words(TOKENS, V)
    assert bag.shape == (3, V) and bag[0, 3] == 2 and bag[0, 5] == 1 and bag[0].sum() == 3  # repeats count
    assert bag[1, 7] == 1 and bag[1].sum() == 1 and bag[:, [0, SOT, EOT]].sum() == 0       # no SOT, EOT, padding
    with pytest.raises(ValueError, match="out of range for 10 ids"):
        bag_of_words(TOKENS, 10)
    with pytest.raises(ValueError, match="integer token ids of shape"):
        word_mask(TOKENS.astype(float))


# ----------------------------------------------------------------------------- gradient checks
def test_gradcheck_caption_lm_log_likelihood():
    m = lm()
    gradcheck(lambda f: m.log_likelihood(f, TOKENS), [rand(3, D)], params=heads_of(m))


def test_gradcheck_caption_lm_loss():
    m = lm()
    gradcheck(lambda: m.loss(images(), TOKENS), [], params=m.parameters())


def test_gradcheck_bag_of_words():
    m = BagOfWords(visual(), D, V)
    gradcheck(lambda f: m.log_likelihood(f, TOKENS), [rand(3, D)], params=m.head.parameters())
    gradcheck(lambda: m.loss(images(), TOKENS), [], params=m.parameters())


def test_gradcheck_bag_of_words_text_and_contrastive_loss():
    text = BagOfWordsText(V, 16, D)
    gradcheck(lambda: text(TOKENS), [], params=text.parameters())
    m = ContrastiveBoW(visual(), D, context_length=6, vocab_size=V, width=16)
    gradcheck(lambda: m.loss(images(), TOKENS), [], params=m.parameters())


# ----------------------------------------------------------------------------- what each model sees
def test_caption_lm_is_causal_and_scores_words_and_eot():
    m, f = lm(), rand(3, D)
    logp = host(m.next_token_log_probs(f, TOKENS))                     # (3, 5, V)
    assert logp.shape == (3, 5, V) and np.allclose(np.exp(logp).sum(-1), 1)
    changed = TOKENS.copy()
    changed[2, 4] = 9                                                  # a later word of caption 2
    after = host(m.next_token_log_probs(f, changed))
    np.testing.assert_allclose(after[:, :4], logp[:, :4], atol=1e-12)  # predictions before it: unchanged
    want = [logp[0, 0, 3] + logp[0, 1, 5] + logp[0, 2, 3] + logp[0, 3, EOT],  # 3 words and EOT
            logp[1, 0, 7] + logp[1, 1, EOT],
            logp[2, 0, 2] + logp[2, 1, 4] + logp[2, 2, 6] + logp[2, 3, 8] + logp[2, 4, EOT]]
    np.testing.assert_allclose(host(m.log_likelihood(f, TOKENS)), want, rtol=1e-12)
    short = host(m.log_likelihood(f[:2], TOKENS[:2, :5]))               # less padding: the same likelihood
    np.testing.assert_allclose(short, want[:2], rtol=1e-12)
    assert not np.allclose(host(m.log_likelihood(rand(3, D, seed=1), TOKENS)), want)  # the image matters
    with pytest.raises(ValueError, match="captions of 7 tokens but context_length is 6"):
        m.log_likelihood(f, np.pad(TOKENS, ((0, 0), (0, 1))))


def test_bag_of_words_text_ignores_order_and_padding():
    text = BagOfWordsText(V, 16, D)
    shuffled = np.array([[SOT, 5, 3, 3, EOT, 0], [SOT, 7, EOT, 0, 0, 0], [SOT, 8, 6, 4, 2, EOT]])
    np.testing.assert_allclose(host(text(shuffled)), host(text(TOKENS)), rtol=1e-12)
    np.testing.assert_allclose(host(text(TOKENS[:2, :5])), host(text(TOKENS))[:2], rtol=1e-12)
    E, P = host(text.token_embedding.weight), host(text.text_projection)
    np.testing.assert_allclose(host(text(TOKENS))[1], E[7] @ P, rtol=1e-12)   # one word: its embedding
    assert not np.allclose(host(text(TOKENS))[0], host(text(TOKENS))[2])


# ----------------------------------------------------------------------------- zero-shot by likelihood
def test_bag_of_words_scorer_picks_the_caption_on_a_hand_made_case():
    """Image feature e_k makes word k 20 nats likelier than any other: the prompt made of the image's
    words wins, and with two templates per class the best-fitting template decides."""
    m = BagOfWords(visual(), D, V)
    weight = np.zeros((V, D))
    weight[np.arange(D), np.arange(D)] = 20.0                          # logit of word k = 20 * feature k
    m.head.weight.data[...] = backend.asarray(weight, like=m.head.weight.data)
    m.head.bias.data[...] = 0
    feats = np.eye(D)[[1, 4, 6]]                                       # three images: words 1, 4, 6
    prompts = np.array([[SOT, w, EOT, 0] for w in range(D)])           # one prompt per word, class = word
    scores = likelihood_scores(m, backend.asarray(feats), prompts, templates_per_class=1)
    assert scores.shape == (3, D) and scores.argmax(1).tolist() == [1, 4, 6]
    # two templates per class: class c is "word c" or "word c and word 7"; image 1 also shows word 7
    feats = np.eye(D)[[1]] + np.eye(D)[[7]]
    prompts = np.array([[SOT, c, EOT, 0] if t == 0 else [SOT, c, 7, EOT] for c in range(3) for t in range(2)])
    scores = likelihood_scores(m, backend.asarray(feats), prompts, templates_per_class=2)
    logits = np.zeros(V)
    logits[:D] = 20 * feats[0]
    ll = bag_of_words(prompts, V) @ (logits - np.log(np.exp(logits).sum()))  # the sum of its words' log p
    want = np.log(np.exp(ll.reshape(3, 2)).mean(1))                    # log mean_t p(prompt | image)
    np.testing.assert_allclose(scores[0], want, rtol=1e-5)
    assert scores.argmax(1).tolist() == [1]
    with pytest.raises(ValueError, match="6 prompts is not a whole number of classes of 4 templates"):
        likelihood_scores(m, backend.asarray(feats), prompts, templates_per_class=4)


@pytest.mark.parametrize("kind", ["lm", "bow"])
def test_a_trained_scorer_picks_the_true_caption(kind):
    """Four images, each with its own caption (the same words in a different order for two of them, which
    only the language model can tell apart); after a short fit each image's own caption is the likeliest."""
    caps = np.array([[SOT, 3, 5, EOT, 0], [SOT, 5, 3, EOT, 0], [SOT, 9, 9, 11, EOT], [SOT, 12, EOT, 0, 0]])
    x = images(4, seed=1)
    m = lm() if kind == "lm" else BagOfWords(visual(), D, V)
    opt = optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(150):
        loss = m.loss(x, caps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = likelihood_scores(m, m.encode_image(x).data, caps, templates_per_class=1)
    if kind == "lm":
        assert scores.argmax(1).tolist() == [0, 1, 2, 3]
    else:  # a bag cannot tell "3 5" from "5 3": the first two tie, the others are right
        np.testing.assert_allclose(scores[:, 0], scores[:, 1], rtol=1e-6)
        assert scores[2].argmax() == 2 and scores[3].argmax() == 3 and scores[0, :2].min() > scores[0, 2:].max()
