"""A scripted MLLM backend (a test double implementing core.mllm.backend.MllmBackend):
replies and yes-probabilities come from functions of the request, and every request is
recorded; a request with a stream gets the reply a word at a time (and honours its cancel).
For unit tests of the scene logic; graph tests use the real backends."""

import re

from mr_mllm_ros.core.types import Generation


class ScriptedBackend:
    def __init__(self, reply=lambda req: req.answer_prefix, yes=lambda req: 0.5,
                 sees_images=False, name='scripted (test double)'):
        self._reply, self._yes = reply, yes
        self.sees_images = sees_images
        self.name = name
        self.requests = []

    def generate(self, request):
        self.requests.append(request)
        text = self._reply(request)
        stream = request.stream
        if stream is not None:  # streamed a word at a time, cancel checked between words
            stream.check()
            rest = text[len(request.answer_prefix):] if text.startswith(
                request.answer_prefix) else text
            for word in re.findall(r'\s*\S+\s*', rest):
                stream.emit(word)
                stream.check()
        return Generation(text=text, prompt_tokens=len(request.user.split()),
                          generated_tokens=len(text.split()))

    def yes_probability(self, requests):
        self.requests.extend(requests)
        return [self._yes(r) for r in requests]

    def count_tokens(self, text):
        return len(text.split())

    def close(self):
        pass
