"""The SQL of the shared channel store (`PostgresChannelStore`), one statement per step.

Every statement names the channel contract (`contract`): channels of several contracts may
share one database. Times are the database's own (`now()`), so hosts with skewed clocks agree
on when a lease expires; each instance counts its own side of a lease on its monotonic clock.
"""

from typing import Final

TAKE: Final = """
INSERT INTO channel_leases AS l (contract, channel_id, holder, epoch, expires_at)
VALUES (%(contract)s, %(channel)s, %(me)s, 1, now() + make_interval(secs => %(lease)s))
ON CONFLICT (contract, channel_id) DO UPDATE
SET holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at,
    wanted_by = NULL, wanted_at = NULL
WHERE l.holder IS NULL OR l.holder = excluded.holder OR l.expires_at < now()
RETURNING epoch
"""
"""Take a channel's lease if it is free, expired, or this instance's: its new epoch, or no row.
(A live holder's heartbeat does not count: a frozen process's heartbeat stops too, but only
the expiry, which it counts on its own clock, tells it to stop accepting.)"""

WANT: Final = """
UPDATE channel_leases SET wanted_by = %(me)s, wanted_at = now()
WHERE contract = %(contract)s AND channel_id = %(channel)s
  AND holder IS NOT NULL AND holder <> %(me)s
"""

WANTED: Final = """
SELECT channel_id FROM channel_leases
WHERE contract = %(contract)s AND holder = %(me)s AND wanted_by IS NOT NULL
"""

RENEW: Final = """
UPDATE channel_leases AS l SET expires_at = now() + make_interval(secs => %(lease)s)
FROM unnest(%(channels)s::text[], %(epochs)s::bigint[]) AS h(channel_id, epoch)
WHERE l.contract = %(contract)s AND l.channel_id = h.channel_id AND l.epoch = h.epoch
  AND l.holder = %(me)s
RETURNING l.channel_id
"""
"""Renew the leases still this instance's at the epochs it took them; the rows it renewed
(and locked until the transaction ends: no one takes them meanwhile)."""

RELEASE: Final = """
UPDATE channel_leases SET holder = NULL, wanted_by = NULL, wanted_at = NULL,
    expires_at = now()
WHERE contract = %(contract)s AND channel_id = ANY(%(channels)s::text[]) AND holder = %(me)s
"""

RELEASE_ALL: Final = """
UPDATE channel_leases SET holder = NULL, wanted_by = NULL, wanted_at = NULL,
    expires_at = now()
WHERE contract = %(contract)s AND holder = %(me)s
"""

STATE: Final = """
SELECT state FROM channel_states WHERE contract = %(contract)s AND channel_id = %(channel)s
"""

WRITE_STATES: Final = """
INSERT INTO channel_states (contract, channel_id, payee, status, version, state)
SELECT %(contract)s, * FROM unnest(
    %(channels)s::text[], %(payees)s::text[], %(statuses)s::int[], %(versions)s::bigint[],
    %(states)s::text[])
ON CONFLICT (contract, channel_id) DO UPDATE SET
    payee = excluded.payee, status = excluded.status, version = excluded.version,
    state = excluded.state, updated_at = now()
"""

ADD_READS: Final = """
INSERT INTO channel_paid_reads
    (contract, payer, resource, channel_id, cumulative, url, price, payee, token, at)
SELECT %(contract)s, * FROM unnest(
    %(payers)s::text[], %(resources)s::text[], %(channels)s::text[],
    %(cumulatives)s::numeric[], %(urls)s::text[], %(prices)s::numeric[], %(payees)s::text[],
    %(tokens)s::text[], %(ats)s::float8[])
ON CONFLICT (payer, resource, contract, channel_id, cumulative) DO UPDATE SET
    url = excluded.url, price = excluded.price, at = excluded.at
"""

DROP_READ: Final = """
DELETE FROM channel_paid_reads WHERE payer = %s AND resource = %s AND contract = %s
  AND channel_id = %s AND cumulative = %s
"""

ORPHANS: Final = """
SELECT s.channel_id FROM channel_states s
LEFT JOIN channel_leases l ON l.contract = s.contract AND l.channel_id = s.channel_id
WHERE s.contract = %(contract)s AND s.status < 3
  AND (l.holder IS NULL OR l.expires_at < now())
  AND (s.state::json->>'highest')::numeric > (s.state::json->>'claimed')::numeric
ORDER BY s.updated_at LIMIT %(limit)s
"""
"""Channels no live instance holds with a voucher above what was claimed (status < CLOSED):
their holder stopped before it claimed them."""

FIND_READ: Final = """
SELECT channel_id, cumulative, url, price, at, payer, payee, token FROM channel_paid_reads
WHERE payer = %(payer)s AND resource = %(resource)s AND contract = %(contract)s
ORDER BY at LIMIT 1
"""
