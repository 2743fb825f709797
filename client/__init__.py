"""Parley's Python SDK: `Parley` (sync) and `AsyncParley` (async) over the service's HTTP API.

    from parley.client import Parley

    with Parley() as client:                      # PARLEY_URL, PARLEY_API_KEY
        agent = client.agents.create("Chef", context="You are a chef.")
        for event in client.stream("What shall we cook?", agent="Chef"):
            if event.type == "delta":
                print(event.content, end="", flush=True)

See docs/client.md.
"""

from ._async import AsyncAgents, AsyncEventStream, AsyncJobs, AsyncMcpServers, AsyncParley, AsyncSessions
from ._base import DEFAULT_BASE_URL
from ._sync import Agents, EventStream, Jobs, McpServers, Parley, Sessions
from .errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    ConnectionError,
    GatewayTimeoutError,
    ModelError,
    NotFoundError,
    ParleyError,
    PayloadTooLargeError,
    RateLimitError,
    StreamError,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
    error_from_response,
)
from .models import (
    Agent,
    AgentCreate,
    AgentFields,
    AgentOptions,
    AgentPublic,
    AgentUpdate,
    ApprovalDecision,
    ApprovalResult,
    CancelResult,
    ChatResponse,
    Event,
    EventType,
    Job,
    JobAccepted,
    JobPublic,
    McpServer,
    McpServerFields,
    McpServerOptions,
    McpTool,
    Message,
    MessagePublic,
    PendingCall,
    Session,
    SessionPage,
    SessionPublic,
)
from .sse import ServerSentEvent, SSEDecoder

__all__ = [
    "DEFAULT_BASE_URL",
    "APIError",
    "Agent",
    "AgentCreate",
    "AgentFields",
    "AgentOptions",
    "AgentPublic",
    "AgentUpdate",
    "Agents",
    "ApprovalDecision",
    "ApprovalResult",
    "AsyncAgents",
    "AsyncEventStream",
    "AsyncJobs",
    "AsyncMcpServers",
    "AsyncParley",
    "AsyncSessions",
    "AuthenticationError",
    "CancelResult",
    "ChatResponse",
    "ConflictError",
    "ConnectionError",
    "Event",
    "EventStream",
    "EventType",
    "GatewayTimeoutError",
    "Job",
    "JobAccepted",
    "JobPublic",
    "Jobs",
    "McpServer",
    "McpServerFields",
    "McpServerOptions",
    "McpServers",
    "McpTool",
    "Message",
    "MessagePublic",
    "ModelError",
    "NotFoundError",
    "Parley",
    "ParleyError",
    "PayloadTooLargeError",
    "PendingCall",
    "RateLimitError",
    "SSEDecoder",
    "ServerSentEvent",
    "Session",
    "SessionPage",
    "SessionPublic",
    "Sessions",
    "StreamError",
    "UnavailableError",
    "ValidationError",
    "WaitTimeoutError",
    "error_from_response",
]
