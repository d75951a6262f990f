"""Redis helpers of the integration tier: a client for a lab Redis, the critical key set by SCAN,
a key's type and value read with type-specific commands (not DUMP), for independent compares."""
import redis


def redis_client(host, port, password, **extra):
    return redis.Redis(host=host, port=int(port), password=password, socket_connect_timeout=5, **extra)


def redis_tls(hv):
    """redis-py keywords for the inventory's Redis TLS settings (the lab: TLS, verified against the lab CA)."""
    if not hv.get("fediflow_redis_tls"):
        return {}
    return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": hv.get("fediflow_redis_tls_ca_cert") or None}


def region_redis(hv):
    """The Redis of a lab region (its inventory host variables)."""
    return redis_client(hv["fediflow_redis_host"], hv["fediflow_redis_port"], hv["fediflow_redis_password"],
                        **redis_tls(hv))


def critical_keys(client, patterns):
    keys = set()
    for pattern in patterns:
        keys.update(client.scan_iter(match=pattern, count=1000))
    return keys


def redis_value(client, key):
    """Type and value read with type-specific commands (not DUMP), for an independent compare."""
    kind = client.type(key).decode()
    if kind == "string":
        return kind, client.get(key)
    if kind == "hash":
        return kind, client.hgetall(key)
    if kind == "list":
        return kind, client.lrange(key, 0, -1)
    if kind == "set":
        return kind, client.smembers(key)
    if kind == "zset":
        return kind, client.zrange(key, 0, -1, withscores=True)
    return kind, None
