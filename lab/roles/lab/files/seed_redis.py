"""Seed the lab's primary Redis with a FediFlow-like cache: critical keys of every type with
TTLs (instance settings, trends, home-timeline heads, sessions) and non-critical noise.

The password comes from the REDIS_PASSWORD environment variable, never the command line.
Idempotent: a seeded Redis (key ``lab:seeded``) is left alone. Prints one JSON line.
"""
import argparse
import json
import os
import random
import sys

import redis


def seed(client, critical, noise, rnd):
    pipe = client.pipeline(transaction=False)
    count = {"critical": 0, "noise": 0}

    def add(kind):
        count[kind] += 1

    # instance settings: a hash, strings without TTL, a set of blocked domains
    pipe.hset("settings:instance", mapping={"title": "FediFlow Lab", "registrations": "open",
                                            "max_toot_chars": "500", "theme": "default"})
    add("critical")
    pipe.sadd("settings:blocked_domains", *["spam%d.example" % i for i in range(25)])
    add("critical")
    for i in range(48):
        pipe.set("settings:flag:%d" % i, "on" if i % 3 else "off")
        add("critical")
    budget = max(0, critical - count["critical"])
    trends = budget // 10
    feeds = budget * 4 // 10
    queues = budget // 10
    sessions = budget - trends - feeds - queues
    # trends: sorted sets (scores) with an hour-ish TTL
    for i in range(trends):
        pipe.zadd("trends:tags:%d" % i, {"tag%d" % j: rnd.randint(1, 1000) for j in range(10)})
        pipe.pexpire("trends:tags:%d" % i, rnd.randint(3600, 7200) * 1000)
        add("critical")
    # home-timeline heads: sorted sets of status ids (no TTL) and lists of pending ids (TTL)
    for i in range(feeds):
        pipe.zadd("feed:home:%d" % i, {str(10 ** 6 + i * 40 + j): 10 ** 6 + i * 40 + j for j in range(20)})
        add("critical")
    for i in range(queues):
        pipe.rpush("feed:home:%d:pending" % i, *[str(rnd.randint(1, 10 ** 7)) for _j in range(5)])
        pipe.expire("feed:home:%d:pending" % i, rnd.randint(86400, 172800))
        add("critical")
    # sessions: strings with days of TTL
    for i in range(sessions):
        pipe.set("session:%032x" % rnd.getrandbits(128), json.dumps({"account_id": i, "ip": "192.0.2.%d" % (i % 250)}),
                 ex=rnd.randint(86400, 7 * 86400))
        add("critical")
    # noise the application rebuilds: rendered fragments and rate-limit counters
    for i in range(noise):
        if i % 2:
            pipe.set("cache:views:status:%d" % i, "<div>%d</div>" % i, ex=rnd.randint(60, 3600))
        else:
            pipe.incrby("rack:attack:%d" % i, rnd.randint(1, 50))
        add("noise")
    pipe.set("lab:seeded", "1")
    pipe.execute()
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--critical", type=int, default=3000)
    parser.add_argument("--noise", type=int, default=1000)
    parser.add_argument("--tls-ca-cert", help="connect over TLS, verifying the server against this CA")
    args = parser.parse_args(argv)
    tls = {"ssl": True, "ssl_ca_certs": args.tls_ca_cert, "ssl_cert_reqs": "required"} if args.tls_ca_cert else {}
    client = redis.Redis(host=args.host, port=args.port, password=os.environ.get("REDIS_PASSWORD") or None, **tls)
    if client.exists("lab:seeded"):
        print(json.dumps({"changed": False, "keys": client.dbsize()}))
        return 0
    count = seed(client, args.critical, args.noise, random.Random(11))
    print(json.dumps({"changed": True, "keys": client.dbsize(), "seeded": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
