"""Item titles, tags and descriptions that carry their item's topic.

Topic words are pseudo words built from topic-specific roots, so sub-word tokenisers see
shared pieces; they are mixed with shared English filler words so that text is
informative without being trivially separable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from multirec.data.synthetic.defects import break_texts

# Shared filler words: every topic's text uses them, so text is not trivially separable.
_FILLER_TEXT = (
    "the a my new best top first last how why what this day night video live part full "
    "official episode vlog clip moment great little big amazing funny real today quick easy "
    "ultimate daily weekly story guide review challenge highlights together again more "
    "never every with without about from into"
)
_FILLER = tuple(_FILLER_TEXT.split())
_GENERIC_TAGS = ("daily", "funny", "vlog", "life", "recommend")
_ONSETS = list("bcdfghjklmnprstvwz") + ["br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "k", "x"]
_ROOTS_PER_TOPIC = 4
_WORDS_PER_TOPIC = 40
_TAGS_PER_TOPIC = 2  # an item takes its topic's first tag, or with 30 % its second
_TITLE_WORDS = (3, 8)  # words per title, drawn in [low, high)
_DESCRIPTION_WORDS = (8, 25)

# titles, tags, descriptions, and which items' texts are vague
Texts = tuple[list[str | None], list[str | None], list[str | None], np.ndarray]


def item_texts(
    rng: np.random.Generator,
    vague_rng: np.random.Generator,
    item_topic: np.ndarray,
    n_topics: int,
    broken: float,
    vague: float,
) -> Texts:
    """Titles (70 % topic words), tags (85 % the topic's), descriptions (55 % topic words).

    A ``vague`` share of items, drawn from ``vague_rng``, gets text of filler words and a
    generic tag only (:func:`_make_vague`). With ``broken > 0`` some items lose their text
    and some descriptions get HTML (:func:`~multirec.data.synthetic.defects.break_texts`).
    """
    words, topic_tags = _vocabularies(rng, n_topics)
    vocab = np.array([*(w for ws in words for w in ws), *_FILLER], dtype=object)
    n = len(item_topic)
    titles: list[str | None] = _sentences(
        rng, vocab, item_topic, rng.integers(*_TITLE_WORDS, n), 0.7
    )
    descriptions: list[str | None] = _sentences(
        rng, vocab, item_topic, rng.integers(*_DESCRIPTION_WORDS, n), 0.55
    )
    all_tags = np.array([t for ts in topic_tags for t in ts] + list(_GENERIC_TAGS), dtype=object)
    own = item_topic * _TAGS_PER_TOPIC + (rng.random(n) < 0.3)
    tag_idx = np.where(rng.random(n) < 0.85, own, rng.integers(0, len(all_tags), n))
    tags: list[str | None] = list(all_tags[tag_idx])
    is_vague = _make_vague(vague_rng, vocab, titles, tags, descriptions, vague)
    if broken > 0:
        break_texts(rng, titles, tags, descriptions, broken)
    return titles, tags, descriptions, is_vague


def _make_vague(
    rng: np.random.Generator,
    vocab: np.ndarray,
    titles: list[str | None],
    tags: list[str | None],
    descriptions: list[str | None],
    vague: float,
) -> np.ndarray:
    """Rewrite a ``vague`` share of items' texts from filler words and generic tags alone;
    return which items (bool).

    Such titles ("my daily vlog part") say nothing of the topic; only the cover (or the
    item's interactions) shows it. Without them the covers would repeat what the texts
    already say, and a sample could not show whether fusing the two helps. Edits the lists
    in place.
    """
    n = len(titles)
    is_vague = np.zeros(n, dtype=bool)
    chosen = rng.choice(n, round(vague * n), replace=False)
    is_vague[chosen] = True
    no_topic = np.zeros(len(chosen), dtype=np.int64)  # topic_share 0: every word is filler
    titles_new = _sentences(rng, vocab, no_topic, rng.integers(*_TITLE_WORDS, len(chosen)), 0.0)
    descriptions_new = _sentences(
        rng, vocab, no_topic, rng.integers(*_DESCRIPTION_WORDS, len(chosen)), 0.0
    )
    generic = rng.integers(0, len(_GENERIC_TAGS), len(chosen))
    for k, i in enumerate(chosen):
        titles[i], descriptions[i] = titles_new[k], descriptions_new[k]
        tags[i] = _GENERIC_TAGS[generic[k]]
    return is_vague


def _vocabularies(
    rng: np.random.Generator, n_topics: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Per topic: 40 pseudo words sharing 4 topic-specific roots, and 2 tags (all distinct)."""
    seen: set[str] = set(_FILLER) | set(_GENERIC_TAGS)

    def fresh(make: Callable[[], str]) -> str:
        while True:
            word = make()
            if word not in seen:
                seen.add(word)
                return word

    def syllable() -> str:
        return str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))

    words, tags = [], []
    for _ in range(n_topics):
        roots = [fresh(syllable) for _ in range(_ROOTS_PER_TOPIC)]
        topic_words = [
            fresh(
                lambda roots=roots: (
                    str(rng.choice(roots)) + "".join(syllable() for _ in range(rng.integers(1, 3)))
                )
            )
            for _ in range(_WORDS_PER_TOPIC)
        ]
        words.append(topic_words)
        tags.append([fresh(lambda: syllable() + syllable()) for _ in range(_TAGS_PER_TOPIC)])
    return words, tags


def _sentences(
    rng: np.random.Generator,
    vocab: np.ndarray,
    item_topic: np.ndarray,
    n_words: np.ndarray,
    topic_share: float,
) -> list[str]:
    """One string of ``n_words[i]`` words per item, each a topic word with ``topic_share``.

    ``vocab`` holds every topic's words, topic by topic, then the filler words. Topic
    words are Zipf-distributed, so each topic has a few words that recur.
    """
    total = int(n_words.sum())
    owner = np.repeat(np.arange(len(item_topic)), n_words)
    from_topic = rng.random(total) < topic_share
    filler_base = len(vocab) - len(_FILLER)
    idx = np.where(
        from_topic,
        item_topic[owner] * _WORDS_PER_TOPIC + rng.zipf(1.6, total).clip(1, _WORDS_PER_TOPIC) - 1,
        filler_base + rng.integers(0, len(_FILLER), total),
    )
    flat = vocab[idx]
    cuts = np.cumsum(n_words)[:-1]
    return [" ".join(part) for part in np.split(flat, cuts)]
