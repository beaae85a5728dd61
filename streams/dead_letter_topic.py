"""The dead-letter topic, kept in place while the worker writes to it.

Why: the topic can be deleted under a running worker (a cleanup script, an operator who
thought it was a scratch topic). Found with a real worker (tests/test_worker_faults.py): the
ingest stage's dead letters then went to a topic the broker had auto-created with its
defaults (one partition); the dead letters already routed to the other partitions could not
be delivered, so they waited for the producer's delivery timeout (3 minutes) while the ingest
stage, which forwards a batch only once the previous one's dead letters are acknowledged,
stalled: 14 of 25 dead letters missing a minute later, and no error that named the cause.
(Without auto-creation every send waits the same 3 minutes and the worker exits.)

Decision (docs/decisions.md): the worker puts the topic back and says so. Every
:data:`WATCH_SECONDS` it looks the topic up (a metadata request that never auto-creates); if
the topic is gone it is created again as at start (``[topics] partitions``, replication factor,
``min.insync.replicas``); if it came back with fewer partitions than before (the broker's
auto-creation) the missing partitions are added and the topic configs set; if it came back
with as many but without the ``min.insync.replicas`` the worker had set on it, that is set
again (a topic that never had it, created so before the worker started, is left alone).
Each look costs two small requests. The first look is taken when the watch starts, which
is before the ingest stage starts: what "as before" means (the partition count, the configs)
is learnt from the topic the worker has just made sure of, not from the first timed look,
which a deletion can precede (found in CI, reproduced with a slower watch:
``tests/test_worker_faults.py``; a deletion before the first look was never repaired, and the
dead letters routed to the partitions the auto-created topic lacked were never delivered,
the ingest stage waiting behind them). A look that fails is a warning, once per run of
failures, since a watch that cannot look cannot repair. Either way an error
names the topic and what was lost: the dead letters written *before* the deletion, with the
topic; none written after, since input offsets are committed only once their dead letters
are acknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.protocol.metadata import MetadataRequest
from mode import Service

from engine.config import Config
from engine.kafka_client import client_kwargs, ensure_topics
from streams.topics import topic_configs

log = logging.getLogger(__name__)

#: How often the dead-letter topic is looked up (seconds).
WATCH_SECONDS = 2.0


class DeadLetterTopicWatch(Service):
    """Looks the dead-letter topic up every :data:`WATCH_SECONDS` and puts it back."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.topic = config.topics.dead_letter
        self.partitions_seen = 0  # the most partitions seen; fewer later: deleted and recreated
        #: min.insync.replicas seen set on the topic; inherited later: deleted and recreated
        self.configs_seen = False
        self.repairs = 0
        self._admin: AIOKafkaAdminClient | None = None
        self._failing = False  # the last look failed (warned once per run of failures)

    async def on_start(self) -> None:
        """The first look, before the ingest stage can send a dead letter (see the module)."""
        await self._look()

    async def on_stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    @Service.timer(WATCH_SECONDS)
    async def _watch(self) -> None:
        await self._look()

    async def _look(self) -> None:
        try:
            await self.check()
        except Exception as exc:  # the broker away: the next look tries again
            if not self._failing:
                log.warning("cannot look up the dead-letter topic %r (%r): it is not watched "
                            "until a look succeeds (every %.0f s)", self.topic, exc,
                            WATCH_SECONDS)
            self._failing = True
            if self._admin is not None:
                admin, self._admin = self._admin, None
                await admin.close()
            return
        if self._failing:
            log.warning("the dead-letter topic %r is watched again", self.topic)
        self._failing = False

    async def partitions(self) -> int | None:
        """The topic's partition count, or None if it does not exist (never auto-created)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(**client_kwargs(self.config.kafka))
            await admin.start()
            self._admin = admin
        response = await self._admin._send_request(
            MetadataRequest([self.topic], allow_auto_topic_creation=False))
        for topic in response.to_object()["topics"]:
            if topic["topic"] != self.topic:
                continue
            if topic["error_code"] == UnknownTopicOrPartitionError.errno:
                return None
            return len(topic["partitions"])
        return None

    async def check(self) -> str | None:
        """One look; what was repaired (``"created"``, ``"partitions added"``,
        ``"configs set"``) or None."""
        found = await self.partitions()
        configured = self.config.topics.partitions
        if found is None:
            log.error(
                "the dead-letter topic %r was deleted while this worker writes to it: creating "
                "it again (%d partitions). The dead letters written before the deletion are "
                "gone with it; none written since is lost (input offsets are committed only "
                "once their dead letters are acknowledged)", self.topic, configured)
            await ensure_topics(self.config.kafka, {self.topic: configured},
                                self.config.topics.replication_factor,
                                {self.topic: topic_configs(self.config)[self.topic]})
            self.partitions_seen = max(self.partitions_seen, configured)
            self.configs_seen = True
            self.repairs += 1
            return "created"
        if found < self.partitions_seen:
            wanted = self.partitions_seen
            log.error(
                "the dead-letter topic %r has %d partition(s) where it had %d: it was deleted "
                "and created again (by the broker's auto-creation, with its defaults) while "
                "this worker writes to it. Adding the missing partitions and setting its "
                "configs. The dead letters written before the deletion are gone with it; none "
                "written since is lost", self.topic, found, wanted)
            assert self._admin is not None
            await self._admin.create_partitions({self.topic: NewPartitions(wanted)})
            await self._set_configs()
            self.repairs += 1
            return "partitions added"
        self.partitions_seen = max(self.partitions_seen, found)
        configured_here = await self._configs_set_on_topic()
        if configured_here:
            self.configs_seen = True
        elif self.configs_seen:
            log.error(
                "the dead-letter topic %r lost its topic configs (min.insync.replicas): it was "
                "deleted and created again (by the broker's auto-creation, with its defaults) "
                "while this worker writes to it. Setting them again. The dead letters written "
                "before the deletion are gone with it; none written since is lost", self.topic)
            await self._set_configs()
            self.repairs += 1
            return "configs set"
        return None

    async def _configs_set_on_topic(self) -> bool:
        """Whether ``min.insync.replicas`` is set on the topic itself (as the worker creates
        it), not inherited from the broker."""
        assert self._admin is not None
        responses = await self._admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, self.topic, {"min.insync.replicas": None})])
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    # (name, value, read_only, config_source, ...): 1 = DYNAMIC_TOPIC_CONFIG
                    if entry[0] == "min.insync.replicas" and entry[3] == 1:
                        return True
        return False

    async def _set_configs(self) -> None:
        assert self._admin is not None
        await self._admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, self.topic, topic_configs(self.config)[self.topic])])
