"""The Redis engine (docs/redis.md): queues shared by every mi-server instance that names
the same Redis and key prefix."""

from .engine import RedisEngine

__all__ = ["RedisEngine"]
