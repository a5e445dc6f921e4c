"""Sixteen processes on two "hosts" behave as one breaker (DESIGN §4, §4c).

Half of the workers run in this network namespace, half in one the test makes
(``tests/netns.py``): they share one Redis and one PostgreSQL only over a veth pair, as
processes on two machines of a LAN would. Redis (a server of the test's own) listens on
the pair's address, PostgreSQL is reached through a forwarder bound to it, and so is the
counting upstream. One cycle (dead, trips, waits, trials, heals) checks: at most 5 + W
calls reach the dead dependency, exactly N trials, one event row and one signal per
transition, and every process admitting calls right after the last successful trial
(reported against the 0.25 s of DESIGN §3).
"""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from tests import netns
from tests.conftest import _unavailable
from tests.fleet import (
    Upstream,
    recovery_cycle,
    report,
    require_fleet_variant,
    running_fleet,
    worker_env,
)
from tests.loopback import TcpProxy, serving
from tests.topologies import LocalRedis

WORKERS = 16
TRIALS = 2
#: The workers' STATE_TTL: long, so that a process that waited for its snapshot to expire
#: (instead of re-reading within the recheck interval) fails the test even on a busy machine.
STATE_TTL = 3.0

pytestmark = [
    pytest.mark.services,
    pytest.mark.multiprocess,
    pytest.mark.redis_topology,
    pytest.mark.solo,  # bounds that need a machine not busy with other tests
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def second_host():
    require_fleet_variant()
    reason = netns.unavailable()
    if reason:
        _unavailable(f"two-host fleet test: {reason}")
    with netns.Namespace() as namespace:
        yield namespace


def test_sixteen_processes_on_two_hosts_recover_together(
    second_host, settings, tmp_path, django_db_setup
):
    lan = second_host.host_address
    database = django_settings.DATABASES["default"]
    with (
        LocalRedis(bind=(lan,)) as redis_server,
        TcpProxy((database["HOST"], int(database["PORT"])), host=lan) as postgres,
        serving(lambda port: Upstream(port, host=lan)) as upstream,
    ):
        # This process (which creates the circuits and reads the events) uses the same Redis.
        settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": redis_server.url}
        # PostgreSQL is reached through a forwarder thread of this (busy) test process: give
        # the workers' database queries more than the default DB_TIMEOUT of 0.5 s.
        env = worker_env(STATE_TTL=STATE_TTL, DB_TIMEOUT=5.0)
        env.update(
            CB_REDIS_URL=redis_server.url_on(lan),
            CB_POSTGRES_HOST=lan,
            CB_POSTGRES_PORT=str(postgres.port),
        )
        hosts = [[], second_host.prefix()]  # workers alternate between the two
        with running_fleet(upstream.url, env, WORKERS, prefixes=hosts) as fleet:
            figures = recovery_cycle(
                fleet, upstream, tmp_path, n=TRIALS, state_ttl=STATE_TTL, pace=0.02
            )
    assert figures["trials"] == TRIALS
    report("two_hosts", hosts=2, **figures)
