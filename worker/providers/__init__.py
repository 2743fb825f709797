"""Model providers: each streams one model step for a list of chat messages (base.py has the types
every provider shares). `openai` speaks to OpenAI or any OpenAI-compatible server (openai.py);
`demo` needs no network: it streams a plainly labelled offline answer that still shows the
conversation's memory, and calls the built-in tools when a message asks plainly (demo.py).

Both providers build on base.py alone, so neither imports the other or this package's factory.
"""

from __future__ import annotations

from parley.shared.settings import Settings

from .base import Provider
from .demo import DemoProvider
from .openai import OpenAIProvider


def make_provider(settings: Settings) -> Provider:
    """The provider `PARLEY_PROVIDER` names."""
    if settings.provider == "openai":
        return OpenAIProvider(settings)
    return DemoProvider(settings)
