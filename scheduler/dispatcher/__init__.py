"""The dispatcher (``carousel-dispatcher``).

Pure core: :mod:`.roundrobin` (the nested round-robin), :mod:`.classes` (priority
classes over it), :mod:`.dispatcher` (limits and in-flight counting), :mod:`.waiting`
(why a held head waits), :mod:`.redelivery` (what to do with a head the ledger already
knows). Around it: :mod:`.state` (the core behind one lock), the AMQP adapter
(:mod:`.loop`, :mod:`.mapping`, :mod:`.handover`, :mod:`.confirms`), :mod:`.admin`,
:mod:`.settings`, :mod:`.errors` and :mod:`.main`.
"""
