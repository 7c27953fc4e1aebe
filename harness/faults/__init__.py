"""A Jepsen-style fault suite with accounting (``make faults``; ``--fast`` is the CI subset).

What runs
    A private RabbitMQ node (:mod:`harness.private_broker`, so broker kills touch only
    it), one producer, one dispatcher (or dispatcher shards) and one or two Celery
    workers as real processes (:mod:`.stack`), a ledger (:mod:`.ledgerdb`), and
    ``DRIVER=webhook`` pointed at a recording receiver in this process
    (:mod:`harness.recorder`). A load generator (:mod:`.load`) posts events over 4 hosts
    x 4 VMs x 2 policies (the shards run: 8 x 2 x 2) and retries every batch with the
    same ids until it gets a 202, as an at-least-once client does. Under that load,
    faults (:mod:`.process`, :mod:`.messages`, :mod:`.ledger`, :mod:`.holds`,
    :mod:`.cloud`, :mod:`.cloudapi`, :mod:`.kubernetes`, :mod:`.clock`, :mod:`.shards`)
    are injected one after another (:mod:`.suite`);
    the load then stops and the accounting (:mod:`.accounting`) runs.

Three runs (``make faults``; :func:`.suite.plan`)
    ``full``: every fault but those below, on a SQLite ledger (one machine).
    ``machines``: as processes on several machines would share it, a PostgreSQL ledger —
    a fresh database on the machine's server (:mod:`harness.ledgers`), which the
    dispatcher reaches through a cuttable proxy — short claim leases (3 s) swept every
    second; a few cheap faults of the full run again, then ``clock-skew`` (every action
    claimed by workers whose wall clocks are 60 s behind and ahead, :mod:`.clock`) and
    ``ledger-cut`` (the active dispatcher cut off from PostgreSQL, a standby beside it,
    :mod:`.ledger`).
    ``shards``: two dispatcher shards (``DISPATCHER_PARTITIONS=16``) on a PostgreSQL
    ledger, the load over 8 hosts so that both serve some of it: ``shard-kill`` (one
    killed -9 under load, its partitions taken over, restarted; x2) and
    ``shard-join-leave`` (a third joins under load, another stops cleanly), :mod:`.shards`;
    then faults of the full run that mean the same with shards (the first shard killed
    and restarted at once, the named limits under such kills, broker restarts, duplicate
    deliveries) — not those that start a standby beside "the" dispatcher
    (:attr:`.base.Fault.shards` False).
    Each fault names the ledger it needs (:attr:`.base.Fault.ledger`) and whether it
    needs shards: ``--only NAME`` runs it in that run; ``ledger-lock`` is SQLite's alone
    and skips on PostgreSQL; ``--run NAME`` runs only the runs named (with ``--only``,
    those faults in them). ``--fast`` is one short SQLite run and a shorter one with two
    shards (one ``shard-kill``). Each run has its own stack, accounting and report; the
    exit status is 0 only if every run is clean.

The accounting — over every event id that got a 202, and nothing else
    Each event's final view is GET /events/{id}, asked until every one is final
    (``succeeded`` or ``failed``) or :data:`.suite.FINAL_BOUND` (120 s) has passed. Its
    effects are the receiver's calls for its id; a call is *completed* only when the
    receiver sent its 2xx while the caller was still connected (a call whose worker was
    killed mid-hold is *abandoned*: no effect), and a call answered 409 because a higher
    fencing token for the event was accepted is *fenced* (no effect).

    lost
        the producer answers 404 for it; or the ledger says ``succeeded`` but no call for
        it completed; or it ended ``failed`` without any completed call although it was
        not a poison event (an accepted event whose effect never happened).
    duplicate
        more than one completed call for it (an action cut off mid-way and run again is
        not one: its first call was abandoned). Nor is a second completed call, with a
        larger fencing token, whose first one ended less than a second before the
        harness killed a worker: that worker died between the cloud's answer and the
        ledger's record, and the takeover runs the action again, as documented — such
        events are reported as *repeated*, with their evidence, and do not fail the run.
    violation
        a call accepted while more than ``PER_VM_LIMIT`` calls with a connected caller
        were running on its VM, or more than ``MAX_PARALLEL`` overall — counted per call;
        and what a fault checks itself (:attr:`.base.FaultResult.anomalies`): in
        ``kubernetes-retire`` (:mod:`.kubernetes`), a wrong replica count, a busy pod
        deleted, or a slot held by a worker whose pod is gone;
        and a re-drive of an event whose VM was removed that was not refused (409), or
        left the event anything but ``failed``, or put a message in the removed VM's
        queue (the ``redrive-removed`` fault sees it and reports it);
        in ``consumer-timeout`` (:mod:`.holds`: the private node's consumer_timeout
        shortened to seconds, heads held several times that by a paused dispatcher, a
        busy VM and an unavailable host), each of those holds during which the
        dispatcher's log shows its broker session ending;
        in ``clock-skew``, a call of the phase cut off (abandoned or fenced) although no
        worker was killed: a claim taken over from a live holder;
        and each key's *order*, counted per pair: events e1 and e2 of one (host, vm,
        policy), e1's 202 received by the client before any post carrying e2 was sent —
        so e1 was in the key's queue before e2 existed — must have e1's first completed
        call begin no later than e2's first call (of any outcome) — the suite's
        ``PER_VM_LIMIT`` is 1, so a key's events run one after another. An action cut
        off and run again keeps its place: the key's next event waits for its completed
        run. A poison event never completes: for it, its first call stands in (its
        failed and cut-off attempts all come before the key's next event, which the
        VM's slot holds back until it ends ``failed``), so retried poison is judged, never
        a false positive. The order is the client's, not the ledger's ``accepted_at``:
        that stamp is taken when a request begins, before its events are stored and
        published, so two requests in flight at once may be queued in either order, and
        neither client waited for the other. Left out: pairs of one batch or of racing
        posts (no order), events without any call (a lost one is counted as lost), and
        the monitoring's events (the client never saw their 202).
    stuck
        not final at the bound.

    The ``cloud-api`` fault (:mod:`.cloudapi`) runs events of its own through the
    ``simcloud`` driver, which the receiver never sees, and accounts them itself against
    simcloud's operation records (:mod:`.cloudops`), with the same four kinds: lost (the
    ledger's outcome is not the cloud's: succeeded with no operation that succeeded,
    failed though the cloud failed none — an outcome reported unknown excepted),
    duplicate (two operations for one event), violation (an operation started on a VM
    while another ran there), stuck (not final within its bound). Its events are in the
    final line's count; the load does not adopt them.

    Also reported, and failing the run: *phantom* calls (for an id the load never
    posted: a forged message ran); *refused* ids (a valid post answered with a 4xx —
    the load posts only valid events and re-posts only identical ones); *unanswered*
    ids (still no 202 when the client gave up, 90 s after the load stopped); and queues
    not drained — every event queue, the actions queue (and that of a worker profile a
    fault added) and completions must hold no ready message once the events are final,
    and none at all (unacked ones come back as ready) once the services are stopped.
    Reported only: *misreported* events (a poison event that succeeded, or a normal one
    that failed although its effect completed). Poison events ending ``failed`` are
    fine.

    Each anomaly is charged to the phase it arose in — the baseline, the fault being
    injected then (until the next one starts), or the drain after the load stopped — by
    its time: the end of the first completed call (duplicate), the call's start
    (violation, phantom; for the order, e2's first call), the refusal (refused), or the
    event's ``dispatched_at``, else its first post (lost, stuck, unanswered).

The report
    A table per fault (injected count, recovery time — from the injection until an
    event was dispatched again after the harness restored what it broke — and the
    anomalies charged to it), the evidence for each anomaly (ledger row, receiver calls,
    service log lines naming the id), and the final line
    ``faults: F injected, E events, lost L, duplicates D, violations V, stuck S``.
    A run is clean only if L = D = V = S = 0, there is no phantom call, refused or
    unanswered id, the queues drained, and every fault was injected (one that raised is
    named in the report). ``python -m harness.faults`` prints each run's report, then
    each run's final line, and exits 0 only if every run is clean. The logs,
    ``report.txt`` and ``anomalies.json`` stay in each run's directory (``full/``,
    ``machines/``, ``shards/``).
"""
