"""simcloud's OpenStack Compute API (Nova v2.1): the smallest subset openstacksdk needs
to discover the API, list and read servers and compute services, and run the server
actions Carousel's OpenStack driver uses -- so the real client code
(:mod:`producer.monitoring.openstack`, :mod:`scheduler.worker.openstack_driver`) runs
against simcloud unchanged. Mounted at ``/compute`` (the endpoint a client is given);
auth is the app's (``X-Auth-Token`` or a bearer token, when simcloud has a token).

Versions. ``GET /compute/`` lists v2.1, ``GET /compute/v2.1/`` describes it:
microversions 2.1 to 2.56 (2.56 is the last one that changes anything implemented
here: ``migrate`` to a given host). A request's microversion (``OpenStack-API-Version:
compute X.Y`` or ``X-OpenStack-Nova-API-Version``; "latest" = 2.56; none = 2.1) is
honoured where it matters -- the embedded flavor from 2.47, ``os-migrateLive``'s body
(2.25, 2.30), ``migrate``'s host (2.56), ``networks`` required on create from 2.37,
service ids as UUIDs from 2.53 -- echoed in the answer, and refused (406) outside it.

Servers. A server is a simcloud VM: id = name = the VM's name; ``status`` ACTIVE,
ERROR (DOWN), PAUSED, SHUTOFF (STOPPED), MIGRATING, RESIZE (RESIZING), REBUILD
(UPDATING); ``OS-EXT-SRV-ATTR:host`` and ``:hypervisor_hostname`` = its host, and
(from 2.16) ``host_status`` its host's state (UP, DOWN, MAINTENANCE);
metadata ``carousel.group`` (and ``carousel.group.min``/``.max``, the group's bounds)
for a group replica; ``created`` and ``updated`` are when this API first saw the VM,
and first saw it as shown (``updated`` changes whenever anything shown changes,
strictly increasing, in microseconds; ``created`` follows the cloud's order of
creation). Lists page as Nova's do (``limit``, ``marker``, ``servers_links``; at most
1000 a page), sorted by id; ``changes-since`` and ``deleted`` filter as Nova's do.

Actions (``POST /compute/v2.1/servers/{id}/action``, 202 as Nova) start a simcloud
operation: ``os-start``, ``reboot`` (any type) and ``unpause`` -> heal (simcloud's one
way back to ACTIVE, which is what each of them ends in; heal of an ACTIVE VM changes
nothing, as a reboot changes no state); ``os-stop`` -> stop; ``pause`` -> pause;
``os-migrateLive`` -> live_migrate (``host`` passed on); ``migrate`` -> migrate;
``resize`` -> resize (``flavorRef``); ``rebuild`` -> update (``imageRef``);
``evacuate`` (only off a DOWN host, else 409 as Nova) -> heal, which moves a VM off a
DOWN host; ``confirmResize`` -> no operation (204). As on Nova, a resized or cold-migrated server
then shows VERIFY_RESIZE until ``confirmResize``. An operation the cloud refuses at
once (a VM busy with another, a stopped VM to pause...) is answered 409 with the
cloud's reason, as Nova answers an action the server's state forbids.

Scaling. ``POST /servers`` with metadata ``carousel.group`` -> scale_out of that group:
simcloud names the new replica (``<group>-<n>``) and copies its flavor and image from
the newest replica, whatever ``flavorRef``/``imageRef`` say; the id answered is the
requested name, which reads as BUILD until the replica exists, then as the replica
(whose id is its simcloud name). ``DELETE /servers/{id}`` of a group's newest replica
-> scale_in of its group (simcloud scales in the newest replica: deleting another is
refused with 409, as is deleting a VM in no group). Nothing else can be created or
deleted. The group's min/max are enforced by the cloud (403 at create, 409 at delete).

While an operation started here runs, its server shows the task state Nova shows for
it (``OS-EXT-STS:task_state``: powering-off, migrating, deleting...), and after one
failed it shows a ``fault`` with the operation's error: what a Nova client watches to
know that an action has ended, and how.

Operation ids and fencing: the ``X-Carousel-Operation`` request header names the
operation (else a new id is drawn): an action repeated with the same id is the same
operation, so a retried call never runs twice; ``X-Carousel-Fencing-Token`` is its
fencing token (0 when absent), and one below a token already seen for the operation is
refused with 409.

Also: ``GET /compute/v2.1/os-services`` (a ``nova-compute`` per host: MAINTENANCE ->
status disabled, DOWN -> state down), flavors (simcloud's, id = name), and
``POST /servers/{id}/metadata`` (extra metadata kept here, beside the cloud). Errors
are Nova's: ``{"itemNotFound": {"message": ..., "code": 404}}``.

The modules: :mod:`~simcloud.compute.api` (the routes and their handlers),
:mod:`~simcloud.compute.versions` (microversions), :mod:`~simcloud.compute.views` (what a
server, a flavor looks like), :mod:`~simcloud.compute.actions` (a server action as a
simcloud operation), :mod:`~simcloud.compute.records` (what this API keeps beside the
cloud), :mod:`~simcloud.compute.errors` (Nova's error answers).
"""

from simcloud.compute.api import compute_router

__all__ = ["compute_router"]
