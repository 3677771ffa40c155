"""A minimal client for OpenAI-compatible chat-completions endpoints (stdlib only).

Owns one request/response round trip: `ChatClient.ask(prompt)` posts to `<url>/chat/completions` and returns the
assistant's text. The key is read from an environment variable, never from a flag (flags end up in shell history).
Does not parse answers (`parse.py`) or decide prompts (`generate.py`, `packetclip_training.describe`).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The endpoint could not be reached or answered something that is not a chat completion."""


def completions_url(url: str) -> str:
    """Accept a base URL (`http://host:port/v1`) or the full endpoint; return the full endpoint."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


@dataclass
class ChatClient:
    """One OpenAI-compatible endpoint and model."""

    url: str
    model: str = "gpt-4o-mini"
    api_key_env: str | None = None  # name of the environment variable holding the key; None = no auth header
    temperature: float = 0.2  # low: concept lists should be stable across runs, not creative
    timeout_s: float = 60.0
    system: str = "You are a network security analyst. Answer concisely."
    history: list[dict[str, str]] = field(default_factory=list)  # kept so follow-up prompts can refer back

    def ask(self, prompt: str, keep_history: bool = False) -> str:
        """Send one user message (after the history when `keep_history`) and return the answer's text."""
        messages = [{"role": "system", "content": self.system}]
        if keep_history:
            messages += self.history
        messages.append({"role": "user", "content": prompt})
        answer = self._post({"model": self.model, "messages": messages, "temperature": self.temperature})
        if keep_history:
            self.history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return answer

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise LLMError(f"environment variable {self.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, body: dict[str, object]) -> str:
        url = completions_url(self.url)
        request = urllib.request.Request(url, json.dumps(body).encode(), self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise LLMError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise LLMError(f"{url}: {exc}") from exc
        try:
            text = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{url}: not a chat completion: {str(payload)[:200]}") from exc
        if not isinstance(text, str):
            raise LLMError(f"{url}: message content is not text")
        log.debug("LLM answered %d characters", len(text))
        return text
