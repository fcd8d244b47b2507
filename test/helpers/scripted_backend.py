"""A scripted MLLM backend (a test double implementing core.mllm.base.MllmBackend):
replies and yes-probabilities come from functions of the request, and every request is
recorded. For unit tests of the scene logic; graph tests use the real backends."""

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
        return Generation(text=text, prompt_tokens=len(request.user.split()),
                          generated_tokens=len(text.split()))

    def yes_probability(self, requests):
        self.requests.extend(requests)
        return [self._yes(r) for r in requests]

    def count_tokens(self, text):
        return len(text.split())

    def close(self):
        pass
