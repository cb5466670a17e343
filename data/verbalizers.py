"""Default verbalizers (the label words a zero-shot logit lens scores) and their CLI form.

Every verbalizer starts with a space, because decoder tokenizers such as GPT-2's
encode a word after a space as one token that differs from the bare word.
"""

from __future__ import annotations

from collections.abc import Iterable

_SENTIMENT = {"negative": [" negative"], "positive": [" positive"]}

DEFAULT_VERBALIZERS: dict[str, dict[str, list[str]]] = {
    "rt-critics": {"rotten": [" bad"], "fresh": [" good"]},
    "sst2": _SENTIMENT,
    "rotten_tomatoes": {"neg": [" negative"], "pos": [" positive"]},
    "imdb": {"neg": [" negative"], "pos": [" positive"]},
    "amazon_polarity": _SENTIMENT,
    "ag_news": {
        "World": [" world"],
        "Sports": [" sports"],
        "Business": [" business"],
        "Sci/Tech": [" science"],
    },
    "dbpedia_14": {
        "Company": [" company"],
        "EducationalInstitution": [" school"],
        "Artist": [" artist"],
        "Athlete": [" athlete"],
        "OfficeHolder": [" politician"],
        "MeanOfTransportation": [" vehicle"],
        "Building": [" building"],
        "NaturalPlace": [" nature"],
        "Village": [" village"],
        "Animal": [" animal"],
        "Plant": [" plant"],
        "Album": [" album"],
        "Film": [" film"],
        "WrittenWork": [" book"],
    },
    "yahoo_answers_topics": {
        "Society & Culture": [" society"],
        "Science & Mathematics": [" science"],
        "Health": [" health"],
        "Education & Reference": [" education"],
        "Computers & Internet": [" computers"],
        "Sports": [" sports"],
        "Business & Finance": [" business"],
        "Entertainment & Music": [" entertainment"],
        "Family & Relationships": [" family"],
        "Politics & Government": [" politics"],
    },
}


def default_verbalizers(
    name: str, label_names: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Return the verbalizers of dataset `name`, keyed by label name.

    With `label_names`, the result has exactly those labels, in that order, and a
    label without a stored verbalizer gets " " + its name. Without them, `name`
    must be a registered dataset.
    """
    stored = DEFAULT_VERBALIZERS.get(name, {})
    if label_names is None:
        if not stored:
            raise ValueError(
                f"no default verbalizers for dataset {name!r}; pass its label_names "
                f"or use one of {', '.join(DEFAULT_VERBALIZERS)}"
            )
        label_names = list(stored)
    return {str(label): list(stored.get(str(label), [" " + str(label)])) for label in label_names}


def parse_verbalizer_option(
    values: Iterable[str], label_names: Iterable[str]
) -> dict[str, list[str]]:
    """Parse `LABEL=WORD[,WORD...]` options into verbalizers for the labels given.

    Surrounding quotes are removed and every word gets one leading space, so
    'fresh=" fresh,good"' becomes {"fresh": [" fresh", " good"]}. Labels not
    given are absent from the result, so merge it over `default_verbalizers`.
    """
    known = [str(label) for label in label_names]
    parsed: dict[str, list[str]] = {}
    for value in values:
        label, words = _parse_one_option(value)
        if label not in known:
            raise ValueError(
                f"verbalizer option {value!r} names unknown label {label!r}; "
                f"expected one of {', '.join(known)}"
            )
        if label in parsed:
            raise ValueError(
                f"verbalizer option {value!r} repeats label {label!r}; "
                "give all words of a label in one option, separated by commas"
            )
        parsed[label] = words
    return parsed


def _parse_one_option(value: str) -> tuple[str, list[str]]:
    label, separator, words_text = value.partition("=")
    label = label.strip()
    if not separator or not label:
        raise ValueError(
            f"verbalizer option {value!r} is not of the form LABEL=WORD[,WORD...], "
            "for example fresh=good,great"
        )

    words_text = words_text.strip()
    if len(words_text) >= 2 and words_text[0] == words_text[-1] and words_text[0] in "\"'":
        words_text = words_text[1:-1]
    words = [word.strip() for word in words_text.split(",")]
    if not all(words):
        raise ValueError(
            f"verbalizer option {value!r} has an empty word; "
            "separate non-empty words with single commas, for example fresh=good,great"
        )
    return label, [" " + word for word in words]
